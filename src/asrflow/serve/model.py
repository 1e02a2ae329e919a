"""A trained recognizer as one self-contained MLflow pyfunc model, and transcription of files.

:func:`package_model` writes a directory holding the checkpoint (which embeds the
vocabulary, the feature configuration and the normalisation statistics), the KenLM
files the decoding mode needs and the tuned decoder settings (``decoder.json``), with an
:class:`AsrflowModel` as its pyfunc implementation. :func:`load_transcriber` loads such a
directory, or the same model logged to MLflow (``models:/name/1``, ``models:/name@alias``,
``runs:/<run id>/model``), and returns the :class:`AsrflowModel`, whose
:meth:`~AsrflowModel.transcribe` decodes audio files with the acoustic model and the
beam search exactly as the evaluate stage does.

Audio in any container, sample rate or channel count that sox reads is accepted: a file
soundfile reads at the checkpoint's sample rate in mono is used as is, anything else is
converted by sox first. A file that cannot be used (missing, empty, undecodable) gives a
:class:`Result` with an error naming it; the other files are still transcribed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
import soundfile as sf

from asrflow.features.logmel import AudioError, load_audio

if TYPE_CHECKING:
    from asrflow.decode.beam import BeamConfig

#: Names of the artifacts inside a packaged model (``context.artifacts`` keys); the LM
#: files are stored under their own names (``lm.bin``, ``lexicon.txt``, ``char.bin``).
CHECKPOINT, DECODER = "checkpoint", "decoder"
#: LM files each decoding mode reads from the LM directory.
LM_FILES = {"lexicon": ("lm.bin", "lexicon.txt"), "lexicon_free": ("char.bin",)}
#: Distributions the model needs at load time (besides asrflow itself), pinned to the
#: versions installed when it was packaged.
RUNTIME_PACKAGES = ("mlflow", "torch", "torchaudio", "numpy", "pandas", "pyarrow", "soundfile",
                    "flashlight-text", "cloudpickle")
_MODEL_URI_SCHEMES = ("models:/", "runs:/", "file:/", "s3://", "gs://", "wasbs://", "abfss://", "dbfs:/",
                      "mlflow-artifacts:/", "http://", "https://", "hdfs://", "sftp://", "ftp://")


class ModelLoadError(RuntimeError):
    """The model path or URI does not lead to a loadable asrflow model; the message says which."""


@dataclass(frozen=True)
class DecoderSettings:
    """Tuned beam-search settings: LM weight ``alpha``, word (lexicon-free: separator)
    score ``beta``, and the ``decode`` block of params.yaml. ``tune/best.json`` holds
    exactly these keys."""

    alpha: float
    beta: float
    beam_size: int = 50
    beam_threshold: float = 25.0
    token_beam: int = 0
    mode: str = "lexicon"

    def __post_init__(self) -> None:
        if self.mode not in LM_FILES:
            raise ValueError(f"decoder mode {self.mode!r} is not one of {sorted(LM_FILES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecoderSettings":
        """Settings from a dict such as ``best.json``; ``alpha`` and ``beta`` are required,
        keys that are not settings are ignored."""
        missing = [k for k in ("alpha", "beta") if k not in d]
        if missing:
            raise ValueError(f"decoder settings lack {', '.join(missing)}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def beam_config(self) -> BeamConfig:
        """The :class:`asrflow.decode.beam.BeamConfig` part (everything but alpha and beta)."""
        from asrflow.decode.beam import BeamConfig

        return BeamConfig(beam_size=self.beam_size, beam_threshold=self.beam_threshold,
                          token_beam=self.token_beam, mode=self.mode)


@dataclass(frozen=True)
class Result:
    """One file's transcript, or why there is none (``text`` is None when ``error`` is set;
    the error names the file)."""

    path: str
    text: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# ------------------------------------------------------------------------------------ audio

def convert_audio(path: str | Path, sample_rate: int, out_path: str | Path) -> Path:
    """Convert ``path`` with sox to a 16-bit mono WAV at ``sample_rate`` (``out_path``).

    Raises :class:`AudioError` naming ``path`` if sox is missing or cannot read it.
    """
    sox = shutil.which("sox")
    if sox is None:
        raise AudioError(f"{path}: not {sample_rate} Hz mono and sox, which converts it, is not installed "
                         "(apt-get install sox)")
    out_path = Path(out_path)
    # absolute input path: a name starting with '-' is never taken for an option
    # -D: no dither (sox dithers with fresh noise on every run by default): the same file always
    # gives the same samples, so the same transcript
    cmd = [sox, "-V1", "-D", str(Path(path).absolute()), "-r", str(sample_rate), "-c", "1", "-b", "16",
           "-e", "signed-integer", str(out_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0 or not out_path.exists():
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        # "/usr/bin/sox FAIL formats: can't open input file `x.wav': WAVE: RIFF header not found"
        reason = re.sub(r"^\S*sox FAIL (\w+: )?", "", lines[-1]) if lines else f"exit status {proc.returncode}"
        raise AudioError(f"{path}: sox cannot convert it: {reason}")
    return out_path


def prepare_audio(path: str | Path, sample_rate: int, work_dir: str | Path) -> np.ndarray:
    """The waveform of ``path`` as float32 mono at ``sample_rate``.

    Used directly when soundfile reads it at that rate in mono; otherwise converted by
    sox (:func:`convert_audio`) into ``work_dir`` (the converted file is removed after
    reading). Raises :class:`AudioError` naming the file: missing, a directory, not
    readable, empty (0 bytes or 0 samples) or not decodable.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{path}: no such file")
    if p.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not os.access(p, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    if p.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        info = sf.info(str(p))
        sf_error = None
    except Exception as e:  # soundfile raises several types for files it cannot parse
        info, sf_error = None, str(e).replace(f"Error opening {str(p)!r}: ", "").strip()
    if info is not None and info.samplerate == sample_rate and info.channels == 1:
        wav = load_audio(p, sample_rate, name=str(path))
    else:
        fd, tmp = tempfile.mkstemp(dir=work_dir, suffix=".wav")
        os.close(fd)
        try:
            try:
                convert_audio(p, sample_rate, tmp)
            except AudioError as e:
                if sf_error is None:
                    raise
                raise AudioError(f"{path}: not a readable audio file (soundfile: {sf_error.rstrip('.')}; "
                                 f"{str(e).removeprefix(f'{path}: ').replace('sox cannot convert it: ', 'sox: ')})"
                                 ) from e
            wav = load_audio(tmp, sample_rate, name=str(path))
        finally:
            Path(tmp).unlink(missing_ok=True)
    if wav.size == 0:
        raise AudioError(f"{path}: no audio samples (0 frames)")
    return wav


# ---------------------------------------------------------------------------- pyfunc model

class AsrflowModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc model: acoustic model + KenLM beam search over audio file paths.

    :meth:`load_context` loads the checkpoint and builds the beam search once;
    :meth:`predict` (pyfunc) and :meth:`transcribe` (plain Python) then decode files.
    """

    def load_context(self, context: Any) -> None:
        """Load the artifacts ``package_model`` stored (``context.artifacts``)."""
        art = context.artifacts
        lm_file = art["char.bin"] if "char.bin" in art else art["lm.bin"]
        self.load(art[CHECKPOINT], Path(lm_file).parent, art[DECODER])

    def load(self, checkpoint: str | Path, lm_dir: str | Path, decoder_json: str | Path) -> None:
        """Load a checkpoint, an LM directory and decoder settings (``decoder.json``)."""
        from asrflow.decode.beam import BeamSearch
        from asrflow.train.loop import load_checkpoint

        self.settings = DecoderSettings.from_dict(json.loads(Path(decoder_json).read_text()))
        self.model, ckpt, self.fe, self.mean, self.std = load_checkpoint(checkpoint)
        self.tokens: list[str] = list(ckpt["vocab"])
        self.sample_rate: int = int(self.fe.cfg.sample_rate)
        # the centred STFT reflect-pads n_fft // 2 samples on each side: shorter input cannot be padded
        self.min_samples: int = int(self.fe.n_fft) // 2 + 1
        self.search = BeamSearch(self.tokens, lm_dir, self.settings.beam_config())
        self.search.set_weights(self.settings.alpha, self.settings.beta)

    def logprobs(self, wav: np.ndarray) -> np.ndarray:
        """(frames, vocab) float32 CTC log-probs of one waveform, as ``compute_logprobs`` makes them."""
        import torch

        from asrflow.decode.beam import utterance_logprobs

        with torch.inference_mode():
            return utterance_logprobs(self.model, self.fe, self.mean, self.std, wav)

    def transcribe(self, paths: Iterable[str | Path]) -> list[Result]:
        """Transcripts of ``paths`` in order; a file that cannot be used gets an error
        result and the rest are still transcribed."""
        return list(self.iter_transcribe(paths))

    def iter_transcribe(self, paths: Iterable[str | Path]) -> Iterator[Result]:
        """:meth:`transcribe`, one result at a time as each file is done."""
        if not hasattr(self, "search"):
            raise RuntimeError("the model is not loaded: use load_transcriber() or mlflow.pyfunc.load_model()")
        with tempfile.TemporaryDirectory(prefix="asrflow-audio-") as work:
            for path in paths:
                name = str(path)
                try:
                    wav = prepare_audio(name, self.sample_rate, work)
                    if wav.size < self.min_samples:
                        raise AudioError(f"{name}: too short ({wav.size} samples; the features need at least "
                                         f"{self.min_samples}, {1000 * self.min_samples / self.sample_rate:.0f} ms)")
                    lp = self.logprobs(wav)
                except AudioError as e:
                    yield Result(name, None, str(e))
                    continue
                yield Result(name, self.search.decode(lp) if lp.shape[0] else "")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """pyfunc entry point: ``model_input`` is a DataFrame with a ``path`` column (a list
        of paths is accepted too). Returns a DataFrame with ``path``, ``text`` and ``error``
        (None on success), one row per input path, in order."""
        if isinstance(model_input, pd.DataFrame):
            if "path" not in model_input.columns:
                raise ValueError(f"model input needs a 'path' column; it has {list(model_input.columns)}")
            paths = model_input["path"].tolist()
        elif isinstance(model_input, (str, os.PathLike)):
            paths = [model_input]
        else:
            paths = list(model_input)
        rows = [asdict(r) for r in self.transcribe(paths)]
        # object columns keep None as None (pandas' default string dtype would make it NaN)
        return pd.DataFrame(rows, columns=["path", "text", "error"], dtype=object)


# ---------------------------------------------------------------------------- packaging

def pinned_requirements() -> list[str]:
    """:data:`RUNTIME_PACKAGES` pinned to the installed versions (local labels such as
    ``+cpu`` dropped: they are not on the package index)."""
    out = []
    for name in RUNTIME_PACKAGES:
        try:
            out.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Silence what MLflow says about choices made here on purpose: the class is pickled
    by reference (an empty instance of an installed class), no signature or input example
    (``predict`` takes a DataFrame with a ``path`` column or a plain list of paths, and an
    example would need an audio file), and artifact copy progress bars."""
    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            msg = record.getMessage()
            return not msg.startswith(("Passing a Python object as `python_model`",
                                       "Failed to infer model signature"))

    log = logging.getLogger("mlflow.pyfunc")
    drop = _Drop()
    log.addFilter(drop)
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            yield
    finally:
        log.removeFilter(drop)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def package_model(out_dir: str | Path, model_pt: str | Path, lm_dir: str | Path, settings: DecoderSettings) -> Path:
    """Write the pyfunc model directory ``out_dir`` (replacing any previous one) and return it.

    Artifacts, all in ``out_dir/artifacts/``: ``model.pt`` (the checkpoint as train.py
    saves it: weights, vocabulary, feature configuration, statistics), only the LM files
    ``settings.mode`` needs (``lm.bin`` + ``lexicon.txt``, or ``char.bin``) and
    ``decoder.json`` (``settings``). The package is built in a sibling temporary directory
    and renamed into place, so ``out_dir`` never holds a half-written model. No network
    access: requirements are pinned from the installed versions, not inferred.
    """
    out_dir, model_pt, lm_dir = Path(out_dir).absolute(), Path(model_pt).absolute(), Path(lm_dir).absolute()
    if not model_pt.is_file():
        raise FileNotFoundError(f"checkpoint {model_pt} does not exist")
    from asrflow.train.loop import UnsafeCheckpoint, load_safely

    try:  # fails early on a file that is not a checkpoint
        ckpt = load_safely(model_pt)
        vocab_size, sample_rate = len(ckpt["vocab"]), int(ckpt["features"]["sample_rate"])
    except UnsafeCheckpoint:
        raise
    except Exception as e:
        raise ValueError(f"{model_pt} is not an asrflow checkpoint: {e}") from e
    del ckpt
    needed = {name: lm_dir / name for name in LM_FILES[settings.mode]}
    absent = [str(p) for p in needed.values() if not p.is_file()]
    if absent:
        hint = " (set 'lm.char_order' so the lm stage builds char.bin)" if settings.mode == "lexicon_free" else ""
        raise FileNotFoundError(f"decoder mode {settings.mode!r} needs {', '.join(absent)}{hint}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        decoder_json = work / "decoder.json"
        decoder_json.write_text(json.dumps(settings.to_dict(), indent=2, sort_keys=True) + "\n")
        pkg = work / "package"
        with _quiet_mlflow():
            mlflow.pyfunc.save_model(
                path=str(pkg), python_model=AsrflowModel(),
                artifacts={CHECKPOINT: str(model_pt), DECODER: str(decoder_json), **{n: str(p) for n, p in needed.items()}},
                pip_requirements=pinned_requirements(),
                metadata={"asrflow_version": _asrflow_version(), "decode_mode": settings.mode,
                          "sample_rate": sample_rate, "vocab_size": vocab_size})
        if out_dir.exists() or out_dir.is_symlink():
            os.replace(out_dir, work / "previous")
        os.replace(pkg, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _asrflow_version() -> str:
    try:
        return metadata.version("asrflow")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------- loading

def is_model_uri(model: str) -> bool:
    """Whether ``model`` is an MLflow URI (``models:/``, ``runs:/``, ``file:/`` ...) rather than a path."""
    return model.startswith(_MODEL_URI_SCHEMES)


def _needs_download_dir(uri: str) -> bool:
    """Whether loading ``uri`` copies the model out of its store (then into a directory of
    ours that is removed with the model, not into a temporary directory nobody removes).
    Models in a local artifact store are read in place."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    if uri.startswith("file:"):
        return False
    if uri.startswith("models:/"):
        return not isinstance(ModelsArtifactRepository(uri).repo, LocalArtifactRepository)
    return True


def load_transcriber(model: str | Path) -> AsrflowModel:
    """The loaded :class:`AsrflowModel` of a package directory or an MLflow model URI.

    A URI is resolved through the current MLflow tracking/registry URI (``runs:/`` to the
    run's artifact location first, so a model in a local store is read in place). Raises
    :class:`ModelLoadError` naming ``model`` when it does not exist or is not an asrflow model.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    model = str(model)
    download: tempfile.TemporaryDirectory | None = None
    try:
        if not is_model_uri(model):
            p = Path(model)
            if not p.exists():
                raise ModelLoadError(f"model directory {model} does not exist")
            if not (p / "MLmodel").is_file():
                raise ModelLoadError(f"{model} is not an MLflow model directory (no MLmodel file): pass a "
                                     "directory written by asrflow.serve.model.package_model or an MLflow model URI")
            source = str(p.absolute())
        elif RunsArtifactRepository.is_runs_uri(model):
            source = RunsArtifactRepository.get_underlying_uri(model)
        else:
            source = model
        if is_model_uri(source) and _needs_download_dir(source):
            download = tempfile.TemporaryDirectory(prefix="asrflow-model-")
        with _quiet_mlflow():
            loaded = mlflow.pyfunc.load_model(source, dst_path=download.name if download else None)
        impl = loaded.unwrap_python_model()
    except ModelLoadError:
        raise
    except MlflowException as e:
        raise ModelLoadError(f"cannot load model {model}: {e.message}") from e
    except Exception as e:  # a damaged package: unpickling, checkpoint or LM loading failed
        raise ModelLoadError(f"cannot load model {model}: {type(e).__name__}: {e}") from e
    if not isinstance(impl, AsrflowModel):
        raise ModelLoadError(f"{model} is a {type(impl).__name__} model, not an asrflow recognizer")
    impl._download_dir = download  # the downloaded copy lives as long as the model
    return impl

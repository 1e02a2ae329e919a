"""Packaging a trained recognizer as one self-contained MLflow pyfunc model.

:func:`package_model` writes a directory holding the checkpoint (which embeds the
vocabulary, the feature configuration and the normalisation statistics), the KenLM
files the decoding mode needs and the tuned decoder settings (``decoder.json``); its
requirements are pinned from the installed versions (:func:`pinned_requirements`).

The package is data only: no pickled Python object and no code. Its MLmodel names
:data:`~asrflow.serve.settings.LOADER_MODULE` as the pyfunc ``loader_module``, so loading
it (``mlflow.pyfunc.load_model``, ``mlflow models serve``, ``asrflow transcribe``) runs
the installed asrflow, and the checkpoint is read weights-only. A package built by
pickling a ``PythonModel`` would run whatever its ``python_model.pkl`` holds when loaded.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import mlflow
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

from asrflow.common.files import replaced_dir
from asrflow.data.archives import link_or_copy
from asrflow.serve.settings import CHECKPOINT, DATA_DIR, DECODER, LM_FILES, LOADER_MODULE, DecoderSettings

#: What ``predict`` takes and gives, for MLflow's model page and input checks: audio file paths
#: (a string column, given as a DataFrame's ``path`` column or a plain list of paths) to a
#: frame of ``path``, ``text`` (the transcript) and ``error`` (None on success). Its input
#: column is unnamed so both forms pass MLflow's schema enforcement.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string)]),
    outputs=Schema([ColSpec(DataType.string, "path"), ColSpec(DataType.string, "text"),
                    ColSpec(DataType.string, "error", required=False)]))

#: Distributions the model needs at load time (besides asrflow itself), pinned to the
#: versions installed when it was packaged.
RUNTIME_PACKAGES = ("mlflow", "torch", "torchaudio", "numpy", "pandas", "pyarrow", "soundfile",
                    "flashlight-text")


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
    """Silence what MLflow says about choices made here on purpose: no input example (an
    example would need an audio file; :data:`SIGNATURE` says what ``predict`` takes), and
    artifact copy progress bars."""
    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            msg = record.getMessage()
            return not msg.startswith("Failed to infer model signature")

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

    Data, all in ``out_dir/data/asrflow/``: ``model.pt`` (the checkpoint as train.py
    saves it: weights, vocabulary, feature configuration, statistics), only the LM files
    ``settings.mode`` needs (``lm.bin`` + ``lexicon.txt``, or ``char.bin``) and
    ``decoder.json`` (``settings``). The package is built in a sibling temporary directory
    and renamed into place, so ``out_dir`` never holds a half-written model. No network
    access: requirements are pinned from the installed versions, not inferred.
    """
    out_dir, model_pt, lm_dir = Path(out_dir).absolute(), Path(model_pt).absolute(), Path(lm_dir).absolute()
    if not model_pt.is_file():
        raise FileNotFoundError(f"checkpoint {model_pt} does not exist")
    from asrflow.models.checkpoint import UnsafeCheckpoint, load_safely

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

    with replaced_dir(out_dir) as pkg:
        data = pkg.parent / DATA_DIR  # beside the package being built: save_model copies it in
        data.mkdir()
        (data / DECODER).write_text(json.dumps(settings.to_dict(), indent=2, sort_keys=True) + "\n")
        for name, src in {CHECKPOINT: model_pt, **needed}.items():
            link_or_copy(src, data / name)
        with _quiet_mlflow():
            mlflow.pyfunc.save_model(
                path=str(pkg), loader_module=LOADER_MODULE, data_path=str(data),
                pip_requirements=pinned_requirements(), signature=SIGNATURE,
                metadata={"asrflow_version": _asrflow_version(), "decode_mode": settings.mode,
                          "sample_rate": sample_rate, "vocab_size": vocab_size})
    return out_dir


def _asrflow_version() -> str:
    try:
        return metadata.version("asrflow")
    except metadata.PackageNotFoundError:
        return "unknown"

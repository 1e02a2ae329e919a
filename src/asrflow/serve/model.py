"""The recognizer as an MLflow pyfunc model: :class:`AsrflowModel` (acoustic model + KenLM
beam search over audio file paths) and the per-file :class:`Result` it returns.

:meth:`AsrflowModel.transcribe` decodes audio files with the acoustic model and the beam
search exactly as the evaluate stage does. Audio in any container, sample rate or channel
count that sox reads is accepted (:func:`asrflow.data.audio.prepare_audio`). A file that
cannot be used (missing, empty, undecodable) gives a :class:`Result` with an error naming
it; the other files are still transcribed. :mod:`asrflow.serve.package` writes such a model
and :mod:`asrflow.serve.loading` loads it.

A package holds data only (checkpoint, LM files, ``decoder.json``): its MLmodel names this
module as the pyfunc ``loader_module``, so ``mlflow.pyfunc.load_model`` runs the installed
asrflow's :func:`_load_pyfunc`, and nothing in the package is unpickled or executed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asrflow.data.audio import AudioError, prepare_audio
from asrflow.serve.settings import CHECKPOINT, DECODER, DecoderSettings


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


def _load_pyfunc(data_path: str) -> "AsrflowModel":
    """MLflow's pyfunc loader hook (this module is the package's ``loader_module``): the
    model whose files ``package_model`` put in ``data_path``."""
    model = AsrflowModel()
    data = Path(data_path)
    model.load(data / CHECKPOINT, data, data / DECODER)
    return model


class AsrflowModel:
    """The pyfunc implementation: acoustic model + KenLM beam search over audio file paths.

    :meth:`load` loads the checkpoint (weights only) and builds the beam search once;
    :meth:`predict` (pyfunc) and :meth:`transcribe` (plain Python) then decode files.
    """

    def load(self, checkpoint: str | Path, lm_dir: str | Path, decoder_json: str | Path) -> None:
        """Load a checkpoint, an LM directory and decoder settings (``decoder.json``)."""
        from asrflow.decode.beam import BeamSearch
        from asrflow.models.checkpoint import load_checkpoint

        self.settings = DecoderSettings.from_dict(json.loads(Path(decoder_json).read_text()))
        self.lm_dir = Path(lm_dir)
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

        from asrflow.decode.logprobs import utterance_logprobs

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

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """pyfunc entry point: ``model_input`` is a DataFrame with a ``path`` column (a list
        of paths is accepted too). Returns a DataFrame with ``path``, ``text`` and ``error``
        (None on success), one row per input path, in order."""
        if isinstance(model_input, pd.DataFrame):
            if "path" not in model_input.columns and list(model_input.columns) == [0]:
                model_input = model_input.rename(columns={0: "path"})  # a list, as the signature made it a frame
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

"""Export a packaged recognizer for inference outside PyTorch: the acoustic model as ONNX.

:func:`export_onnx` reads a package (a directory ``package_model`` wrote, or an MLflow
model URI) and writes a directory holding:

- ``acoustic.onnx``: log-mel features (batch, frames, n_mels) and their lengths (batch,)
  in; CTC log-probabilities (batch, frames', vocab) and their lengths out. The feature
  normalisation (the stats stage's per-bin mean and std) is inside the graph, so the
  input is the front end's output as it is;
- ``frontend.json``: the front end the graph expects (:class:`asrflow.features.logmel.LogMel`):
  sample rate, mel bins, window and hop, with the recipe written out (a centred,
  reflect-padded STFT with a periodic Hann window of ``win_length`` zero-padded to
  ``n_fft``, power spectrum, HTK mel filterbank from 0 Hz to Nyquist without
  normalisation, natural log of power + 1e-6) for a runtime in another language;
- ``tokens.json`` (the CTC output symbols, blank first), ``decoder.json`` (the tuned beam
  search settings) and the KenLM files that decoding mode reads;
- ``export.json``: versions, opset, the package it came from, and the largest difference
  between ONNX Runtime's log-probs and PyTorch's on the check input.

:class:`OnnxTranscriber` loads such a directory and transcribes with ONNX Runtime for the
acoustic model, the same front end and the same beam search as the PyTorch model;
:func:`asrflow.serve.loading.load_transcriber` picks it for a directory holding
``acoustic.onnx``. Nothing in an export is pickled: ONNX is a protobuf of the graph.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from asrflow.common.files import replaced_dir
from asrflow.serve.model import AsrflowModel
from asrflow.serve.settings import DECODER, LM_FILES, DecoderSettings

ONNX_FILE, FRONTEND, TOKENS, EXPORT_META = "acoustic.onnx", "frontend.json", "tokens.json", "export.json"
OPSET = 17
#: the largest |ONNX Runtime - PyTorch| log-prob difference an export may show on its check input
TOLERANCE = 1e-4
FRONTEND_RECIPE = ("centred STFT (reflect padding of n_fft // 2 samples each side) with a periodic Hann window of "
                   "win_length samples zero-padded to n_fft, hop hop_length; power = re^2 + im^2; "
                   "HTK mel filterbank of n_mels triangles from 0 Hz to sample_rate / 2, not area-normalised "
                   "(torchaudio.functional.melscale_fbanks); features = ln(power @ filterbank + 1e-6), "
                   "shape (frames, n_mels), frames = samples // hop_length + 1; not normalised (the graph does it)")


class ExportError(RuntimeError):
    """The export could not be written, or does not compute what the PyTorch model does."""


def normalised_model(model: Any, mean: Any, std: Any) -> Any:
    """The acoustic model with the stats' normalisation in front, as one eval-mode module."""
    import torch

    class Normalised(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", mean.clone())
            self.register_buffer("std", std.clone())

        def forward(self, features: torch.Tensor, lengths: torch.Tensor):
            return self.model((features - self.mean) / self.std, lengths)

    return Normalised().eval()


def write_onnx(net: Any, features: Any, lengths: Any, path: Path) -> None:
    """``net`` (:func:`normalised_model`) as an ONNX graph at ``path``, traced on the example
    ``features`` (1, frames, n_mels) and ``lengths``; batch and frame axes dynamic.

    torch's TorchScript-based exporter: the torch.export-based one (torch 2.11's default)
    fails on nn.GRU. Its warnings (its deprecation, the tracing of the RNN's shape checks, a
    GRU exported at batch 1) are not for the user: :func:`export_onnx` checks the graph's
    output, and tests/serve/test_export.py runs a padded batch of 3 against PyTorch."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (features, lengths), str(path), input_names=["features", "lengths"],
                          output_names=["logprobs", "out_lengths"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"features": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
                                        "logprobs": {0: "batch", 1: "out_frames"}, "out_lengths": {0: "batch"}})


def onnx_session(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session for ``path``: ``threads`` intra-op threads (0: one per core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_onnx(model: str | Path, out_dir: str | Path, check_seconds: float = 3.0) -> dict[str, Any]:
    """Write the ONNX export of ``model`` (a package directory or MLflow model URI) to
    ``out_dir`` (replaced if it exists; written beside it and renamed into place) and return
    its ``export.json``. Raises :class:`ExportError` when ONNX Runtime's log-probs differ from
    PyTorch's by more than :data:`TOLERANCE` on a check input of ``check_seconds`` of noise."""
    import torch

    from asrflow.serve.loading import load_transcriber

    src = load_transcriber(model)
    with replaced_dir(out_dir) as export:
        export.mkdir()
        net = normalised_model(src.model, src.mean, src.std)
        # the check input: a few seconds of noise through the real front end
        rng = np.random.default_rng(0)
        wav = (0.1 * rng.standard_normal(int(check_seconds * src.sample_rate))).astype(np.float32)
        with torch.inference_mode():
            feats = src.fe(torch.from_numpy(wav)).unsqueeze(0)
            lengths = torch.tensor([feats.shape[1]])
            want, want_len = net(feats, lengths)
        write_onnx(net, feats, lengths, export / ONNX_FILE)
        got, got_len = onnx_session(export / ONNX_FILE).run(None, {"features": feats.numpy(),
                                                                   "lengths": lengths.numpy()})
        diff = float(np.abs(got - want.numpy()).max()) if got.shape == tuple(want.shape) else float("inf")
        if diff > TOLERANCE or got_len.tolist() != want_len.tolist():
            raise ExportError(f"the ONNX graph of {model} does not compute what the PyTorch model does: log-probs "
                              f"{tuple(got.shape)} vs {tuple(want.shape)}, largest difference {diff:.3g} "
                              f"(allowed {TOLERANCE}); nothing was written to {out_dir}")
        fe = src.fe
        (export / FRONTEND).write_text(json.dumps(
            {**asdict(fe.cfg), "n_fft": int(fe.n_fft), "win_length": int(fe.cfg.win_length),
             "hop_length": int(fe.cfg.hop_length), "log_floor": 1e-6, "recipe": FRONTEND_RECIPE}, indent=2) + "\n")
        (export / TOKENS).write_text(json.dumps(src.tokens, ensure_ascii=False) + "\n")
        (export / DECODER).write_text(json.dumps(src.settings.to_dict(), indent=2, sort_keys=True) + "\n")
        for name in LM_FILES[src.settings.mode]:
            shutil.copyfile(src.lm_dir / name, export / name)
        meta = {"source": str(model), "opset": OPSET, "check_max_abs_diff": diff, "check_seconds": check_seconds,
                "onnx_mb": round((export / ONNX_FILE).stat().st_size / 1e6, 3),
                "versions": {name: _version(name) for name in ("asrflow", "torch", "onnx", "onnxruntime")}}
        (export / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a directory :func:`export_onnx` wrote."""
    return (Path(path) / ONNX_FILE).is_file()


class OnnxTranscriber(AsrflowModel):
    """An export (:func:`export_onnx`) as a transcriber: ONNX Runtime computes the log-probs,
    the front end and the beam search are the PyTorch model's (same files, same results)."""

    def load_export(self, export_dir: str | Path, threads: int = 0) -> "OnnxTranscriber":
        from asrflow.decode.beam import BeamSearch
        from asrflow.features.logmel import FeatureConfig, LogMel

        d = Path(export_dir)
        front = json.loads((d / FRONTEND).read_text())
        self.fe = LogMel(FeatureConfig(**{k: front[k] for k in ("sample_rate", "n_mels", "win_ms", "hop_ms")}))
        self.settings = DecoderSettings.from_dict(json.loads((d / DECODER).read_text()))
        self.tokens = list(json.loads((d / TOKENS).read_text()))
        self.sample_rate = int(self.fe.cfg.sample_rate)
        self.min_samples = int(self.fe.n_fft) // 2 + 1
        self.lm_dir = d
        self.session = onnx_session(d / ONNX_FILE, threads)
        self.search = BeamSearch(self.tokens, d, self.settings.beam_config())
        self.search.set_weights(self.settings.alpha, self.settings.beta)
        return self

    def logprobs(self, wav: np.ndarray) -> np.ndarray:
        """(frames, vocab) float32 CTC log-probs of one waveform, computed by ONNX Runtime."""
        import torch

        with torch.inference_mode():
            feats = self.fe(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))).unsqueeze(0).numpy()
        lp, n = self.session.run(None, {"features": feats, "lengths": np.array([feats.shape[1]], dtype=np.int64)})
        return lp[0, : int(n[0])].astype(np.float32)

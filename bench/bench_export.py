"""The acoustic model under ONNX Runtime vs PyTorch, on the same cores and the same inputs.

    python bench/bench_export.py [--files 16] [--repeats 5] [--threads 0] [--model PATH_OR_URI]

- onnx_vs_torch_speedup: PyTorch's acoustic-model time over ONNX Runtime's for the same
  utterances, one at a time (batch 1, as `asrflow transcribe` and a server decode them):
  the graph `asrflow export` writes (asrflow.serve.export: normalisation inside, log-mel
  features in, CTC log-probs out) against the same module in PyTorch under inference mode.
- rtf_torch, rtf_onnx: each side's compute time over the audio's duration.
- max_abs_diff: the largest log-prob difference between the two over all utterances.

The model is params.yaml's train block (the default run's DeepSpeech2) with seeded random
weights unless --model names a trained package or export source: the time per frame does
not depend on the weights' values. Inputs are real speech, --files utterances of ~12 s
spoken by espeak-ng (bench/corpus.py), through the real front end once, outside the
timing (the same features feed both sides). Both sides get the same threads: --threads,
else every core this process may use (torch.set_num_threads, ONNX Runtime's intra-op
threads; one inter-op thread). One warm-up pass each; then --repeats passes alternating
between the sides; medians. Prints one JSON object as its last line and writes
reports/bench/export.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from corpus import REPO, emit, make_sources, median

import numpy as np
import torch

from asrflow.data.audio import load_audio
from asrflow.features.logmel import FeatureConfig, LogMel
from asrflow.models.deepspeech2 import DeepSpeech2, ModelConfig
from asrflow.pipeline.config import load_params
from asrflow.serve.export import normalised_model, onnx_session, write_onnx


def seeded_model(params: dict) -> tuple[torch.nn.Module, LogMel]:
    """The default run's acoustic model (seeded weights, identity-ish stats) and front end."""
    torch.manual_seed(0)
    fcfg = FeatureConfig.from_params(params["features"])
    model = DeepSpeech2(ModelConfig.from_params(params["train"], fcfg.n_mels, vocab_size=29)).eval()
    net = normalised_model(model, torch.full((fcfg.n_mels,), -4.0), torch.full((fcfg.n_mels,), 2.0))
    return net, LogMel(fcfg)


def trained_model(model: str) -> tuple[torch.nn.Module, LogMel]:
    from asrflow.serve.loading import load_transcriber

    m = load_transcriber(model)
    return normalised_model(m.model, m.mean, m.std), m.fe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0: every core this process may use")
    ap.add_argument("--model", help="a package directory or MLflow model URI (default: seeded weights)")
    args = ap.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    params = load_params(REPO / "params.yaml")
    net, fe = trained_model(args.model) if args.model else seeded_model(params)
    with tempfile.TemporaryDirectory() as tmp:
        sources = make_sources(Path(tmp) / "src", args.files)
        sr = fe.cfg.sample_rate
        wavs = [load_audio(str(p), sr) for p, _ in sources]
        with torch.inference_mode():
            feats = [fe(torch.from_numpy(w)).unsqueeze(0) for w in wavs]
            write_onnx(net, feats[0], torch.tensor([feats[0].shape[1]]), Path(tmp) / "acoustic.onnx")
        session = onnx_session(Path(tmp) / "acoustic.onnx", threads)
    audio_s = sum(len(w) for w in wavs) / sr
    inputs = [(f, torch.tensor([f.shape[1]])) for f in feats]

    def run_torch() -> tuple[float, list[np.ndarray]]:
        t0, out = time.perf_counter(), []
        with torch.inference_mode():
            for f, n in inputs:
                out.append(net(f, n)[0].numpy())
        return time.perf_counter() - t0, out

    def run_onnx() -> tuple[float, list[np.ndarray]]:
        t0, out = time.perf_counter(), []
        for f, n in inputs:
            out.append(session.run(None, {"features": f.numpy(), "lengths": n.numpy()})[0])
        return time.perf_counter() - t0, out

    _, ref = run_torch()
    _, got = run_onnx()
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    times: dict[str, list[float]] = {"torch": [], "onnx": []}
    for r in range(args.repeats):
        order = (("torch", run_torch), ("onnx", run_onnx)) if r % 2 == 0 else (("onnx", run_onnx), ("torch", run_torch))
        for name, fn in order:
            times[name].append(fn()[0])
    t_torch, t_onnx = median(times["torch"]), median(times["onnx"])
    emit("export", {
        "onnx_vs_torch_speedup": round(t_torch / t_onnx, 3),
        "rtf_torch": round(t_torch / audio_s, 5), "rtf_onnx": round(t_onnx / audio_s, 5),
        "max_abs_diff": diff, "torch_s": round(t_torch, 4), "onnx_s": round(t_onnx, 4),
        "audio_seconds": round(audio_s, 2), "utterances": len(inputs), "threads": threads, "repeats": args.repeats,
        "model": args.model or "params.yaml train block, seeded random weights",
        "parameters": sum(p.numel() for p in net.parameters()),
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__}})


if __name__ == "__main__":
    main()

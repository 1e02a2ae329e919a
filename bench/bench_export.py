"""The acoustic model under ONNX Runtime vs PyTorch, on the same cores and the same inputs.

    python bench/bench_export.py [--files 16] [--repeats 5] [--threads 0] [--model PATH_OR_URI]

- onnx_vs_torch_speedup: PyTorch's acoustic-model time over ONNX Runtime's for the same
  utterances, one at a time (batch 1, as `asrflow transcribe` and a server decode them):
  the graph `asrflow export` writes (asrflow.serve.export: normalisation inside, log-mel
  features in, CTC log-probs out) against the same module in PyTorch under inference mode.
- rtf_torch, rtf_onnx: each side's compute time over the audio's duration.
- max_abs_diff: the largest log-prob difference between the two over all utterances.

The model is params.yaml's model block (the default run's family and size) with seeded random
weights unless --model names a trained package or export source: the time per frame does
not depend on the weights' values. Inputs are real speech, --files utterances of ~12 s
spoken by espeak-ng (bench/corpus.py), through the real front end once, outside the
timing (the same features feed both sides). Both sides get the same threads: --threads,
else every core this process may use (torch.set_num_threads, ONNX Runtime's intra-op
threads; one inter-op thread). Each timed pass runs in a process of its own after one
warm-up pass, the sides' processes alternating, --repeats each; medians. (In one process
PyTorch's OpenMP threads, which spin between its parallel regions, slowed ONNX Runtime by up
to 1.6x in some runs: a side's idle threads must not tax the other's.) Prints one JSON object as its last line and writes
reports/bench/export.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus import REPO, emit, make_sources, median

import numpy as np
import torch

from asrflow.data.audio import load_audio
from asrflow.features.logmel import FeatureConfig, LogMel
from asrflow.models.families import build_model
from asrflow.pipeline.config import load_params
from asrflow.serve.export import normalised_model, onnx_session, write_onnx


def seeded_model(params: dict) -> tuple[torch.nn.Module, LogMel]:
    """The default run's acoustic model (seeded weights, identity-ish stats) and front end."""
    torch.manual_seed(0)
    fcfg = FeatureConfig.from_params(params["features"])
    model = build_model(params["model"], fcfg.n_mels, vocab_size=29).eval()
    net = normalised_model(model, torch.full((fcfg.n_mels,), -4.0), torch.full((fcfg.n_mels,), 2.0))
    return net, LogMel(fcfg)


def trained_model(model: str) -> tuple[torch.nn.Module, LogMel]:
    from asrflow.serve.loading import load_transcriber

    m = load_transcriber(model)
    return normalised_model(m.model, m.mean, m.std), m.fe


def child(side: str, work: Path, model: str | None, threads: int) -> None:
    """One timed pass of ``side`` over the features in ``work`` after one warm-up pass, in a
    process of its own; writes its time and log-probs to ``work``."""
    torch.set_num_threads(threads)
    feats = np.load(work / "features.npz", allow_pickle=False)
    inputs = [(feats[k], np.array([feats[k].shape[1]], dtype=np.int64)) for k in sorted(feats.files)]
    if side == "onnx":
        session = onnx_session(work / "acoustic.onnx", threads)

        def one(f: np.ndarray, n: np.ndarray) -> np.ndarray:
            return session.run(None, {"features": f, "lengths": n})[0]
    else:
        net = trained_model(model)[0] if model else seeded_model(load_params(REPO / "params.yaml"))[0]

        def one(f: np.ndarray, n: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.from_numpy(f), torch.from_numpy(n))[0].numpy()
    for f, n in inputs:  # warm-up
        one(f, n)
    t0 = time.perf_counter()
    out = [one(f, n) for f, n in inputs]
    seconds = time.perf_counter() - t0
    np.savez(work / f"{side}-out.npz", *out)
    (work / f"{side}-seconds").write_text(repr(seconds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0: every core this process may use")
    ap.add_argument("--model", help="a package directory or MLflow model URI (default: seeded weights)")
    ap.add_argument("--child", choices=("torch", "onnx"), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.child:
        child(args.child, args.work, args.model, threads)
        return
    params = load_params(REPO / "params.yaml")
    net, fe = trained_model(args.model) if args.model else seeded_model(params)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sources = make_sources(work / "src", args.files)
        sr = fe.cfg.sample_rate
        wavs = [load_audio(str(p), sr) for p, _ in sources]
        audio_s = sum(len(w) for w in wavs) / sr
        with torch.inference_mode():
            feats = [fe(torch.from_numpy(w)).unsqueeze(0).numpy() for w in wavs]
        np.savez(work / "features.npz", **{f"u{i:04d}": f for i, f in enumerate(feats)})
        write_onnx(net, torch.from_numpy(feats[0]), torch.tensor([feats[0].shape[1]]), work / "acoustic.onnx")
        times: dict[str, list[float]] = {"torch": [], "onnx": []}
        cmd = [sys.executable, __file__, "--work", str(work), "--threads", str(threads)]
        cmd += ["--model", args.model] if args.model else []
        for r in range(args.repeats):  # each side alone in a process of its own, alternating
            for side in (("torch", "onnx") if r % 2 == 0 else ("onnx", "torch")):
                subprocess.run([*cmd, "--child", side], check=True)
                times[side].append(float((work / f"{side}-seconds").read_text()))
        outs = {side: np.load(work / f"{side}-out.npz", allow_pickle=False) for side in times}
        diff = max(float(np.abs(outs["torch"][k] - outs["onnx"][k]).max()) for k in outs["torch"].files)
    t_torch, t_onnx = median(times["torch"]), median(times["onnx"])
    emit("export", {
        "onnx_vs_torch_speedup": round(t_torch / t_onnx, 3),
        "rtf_torch": round(t_torch / audio_s, 5), "rtf_onnx": round(t_onnx / audio_s, 5),
        "max_abs_diff": diff, "torch_s": round(t_torch, 4), "onnx_s": round(t_onnx, 4),
        "torch_s_all": [round(t, 4) for t in times["torch"]], "onnx_s_all": [round(t, 4) for t in times["onnx"]],
        "audio_seconds": round(audio_s, 2), "utterances": len(feats), "threads": threads, "repeats": args.repeats,
        "model": args.model or "params.yaml train block, seeded random weights",
        "parameters": sum(p.numel() for p in net.parameters()),
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__}})


if __name__ == "__main__":
    main()

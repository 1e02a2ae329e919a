"""The alpha/beta grid: ours (flashlight + KenLM, one decoder per worker) vs pyctcdecode.

    python bench/bench_decode.py [--dataset synth] [--repeats 3] [--peer-python .venv-bench/bin/python]

Both decoders get identical inputs: the tune stage's cached dev log-probs (the acoustic
model is not re-run), the same KenLM binary (the lm stage's lm.bin), the same word list
(our lexicon = pyctcdecode's unigrams), the same beam width and the grid params.yaml
defines (default 45 x 8). The pipeline's outputs are made first if missing
(`snakemake models/<d> data/<d>/lm data/<d>/manifests`).

- grid_speedup_vs_pyctcdecode: pyctcdecode's whole grid (decoder built once,
  reset_params per point, as its users tune) / ours as the tune stage runs it
  (tune.workers: all cores), one run each;
- grid_speedup_vs_pyctcdecode_one_core: the same with ours on one worker;
- grid_wer_diff_vs_pyctcdecode: our best grid WER - pyctcdecode's best grid WER, in
  percentage points (negative = ours better), both scored by asrflow.scoring.metrics;
- grid_amortization: our N-point grid on one worker / (N x the mean time of one point
  decoded alone, LM load and lexicon trie included), over a stride sample of points;
- grid_parallel_speedup: our grid on 1 worker / on all cores (medians of --repeats).

Pruning: ours uses tune.beam_threshold (12 by default) with every token per frame;
pyctcdecode its defaults (beam_prune_logp -10, token_min_logp -5). The JSON also
reports our best point and WER when the grid is searched at decode.beam_threshold
(the evaluate stage's pruning), and tuning_regret_pp: the dev WER, decoded at
decode.beam_threshold, of the point our grid picked minus the best point's there (what
searching with the tighter threshold costs).
Prints one JSON object as its last line and writes reports/bench/decode.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from corpus import REPO, emit, median

from asrflow.pipeline.config import load_params
from asrflow.decode.beam import BeamConfig
from asrflow.decode.logprobs import compute_logprobs
from asrflow.scoring.metrics import best_point, corpus_rates
from asrflow.text.vocab import BLANK, SPACE
from asrflow.models.checkpoint import checkpoint_vocab
from asrflow.decode.search import grid_from_params, run_grid, search_config


def ensure_pipeline_outputs(dataset: str) -> None:
    targets = [f"models/{dataset}", f"data/{dataset}/lm", f"data/{dataset}/manifests"]
    if all((REPO / t).exists() for t in targets):
        return
    subprocess.run(["snakemake", "-j", str(os.cpu_count() or 1), *targets], cwd=REPO, check=True)


def timed_grid(points, logprobs, refs, tokens, lm_dir, cfg, workers):
    t = time.perf_counter()
    rows = run_grid(points, logprobs, refs, tokens, lm_dir, cfg, workers)
    return time.perf_counter() - t, rows


def peer_grid(peer_python: str, logprobs, tokens, lm_dir: Path, points, beam_width: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        lp_path = Path(tmp) / "logprobs.npz"
        np.savez(lp_path, **{f"u{i}": a for i, a in enumerate(logprobs)})
        unigrams = [line.split("\t")[0] for line in (lm_dir / "lexicon.txt").read_text().splitlines()]
        job = {"logprobs": str(lp_path), "tokens": tokens, "blank": BLANK, "space": SPACE,
               "lm": str(lm_dir / "lm.bin"), "unigrams": unigrams, "beam_width": beam_width,
               "grid": [[p.alpha, p.beta] for p in points]}
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        subprocess.run([peer_python, str(REPO / "bench/pyctcdecode_grid.py"), str(Path(tmp) / "job.json"),
                        str(Path(tmp) / "out.json")], check=True)
        return json.loads((Path(tmp) / "out.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="synth")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-python", default=str(REPO / ".venv-bench/bin/python"))
    ap.add_argument("--single-points", type=int, default=12, help="points timed alone for grid_amortization")
    args = ap.parse_args()
    os.chdir(REPO)
    params = load_params("params.yaml")
    ensure_pipeline_outputs(args.dataset)
    t, d = params["tune"], args.dataset
    model, lm_dir = Path(f"models/{d}/model.pt"), Path(f"data/{d}/lm")
    logprobs, rows, _, _ = compute_logprobs(model, f"data/{d}/manifests/dev.parquet", f"cache/{d}", t["max_utterances"])
    refs, tokens = rows["text"].tolist(), checkpoint_vocab(model)
    points = grid_from_params(t)
    decode, cfg = BeamConfig(**params["decode"]), search_config(params)
    cores = os.cpu_count() or 1
    workers = min(t["workers"] or cores, len(points))
    print(f"{len(points)} points x {len(refs)} utterances ({sum(len(x) for x in logprobs)} frames), beam "
          f"{cfg.beam_size}, threshold {cfg.beam_threshold}; {workers} workers", flush=True)

    serial, parallel, table = [], [], None
    for _ in range(args.repeats):  # alternate, so drift on a noisy machine hits both alike
        s, rows1 = timed_grid(points, logprobs, refs, tokens, lm_dir, cfg, 1)
        p, rows2 = timed_grid(points, logprobs, refs, tokens, lm_dir, cfg, workers)
        assert rows1 == rows2, "serial and parallel grids differ"
        serial.append(s)
        parallel.append(p)
        table = rows1
        print(f"ours: 1 worker {s:.2f} s, {workers} workers {p:.2f} s", flush=True)
    stride = max(1, len(points) // args.single_points)
    alone = [timed_grid([pt], logprobs, refs, tokens, lm_dir, cfg, 1)[0] for pt in points[::stride]]
    ours_best = best_point(table)

    peer = peer_grid(args.peer_python, logprobs, tokens, lm_dir, points, cfg.beam_size)
    peer_table = [{"alpha": pt["alpha"], "beta": pt["beta"], **corpus_rates(refs, pt["hyps"])}
                  for pt in peer["points"]]
    peer_best = best_point(peer_table)
    print(f"pyctcdecode: {peer['seconds']:.2f} s, best WER {peer_best['wer']:.3f} at "
          f"({peer_best['alpha']}, {peer_best['beta']}); ours best {ours_best['wer']:.3f} at "
          f"({ours_best['alpha']}, {ours_best['beta']})", flush=True)

    wide_cfg = dataclasses.replace(cfg, beam_threshold=decode.beam_threshold)
    wide_seconds, wide = timed_grid(points, logprobs, refs, tokens, lm_dir, wide_cfg, workers)
    wide_best = best_point(wide)
    wide_wer = {(r["alpha"], r["beta"]): r["wer"] for r in wide}
    regret = wide_wer[(ours_best["alpha"], ours_best["beta"])] - wide_best["wer"]

    ours_parallel, ours_serial = median(parallel), median(serial)
    emit("decode", {
        "grid_speedup_vs_pyctcdecode": round(peer["seconds"] / ours_parallel, 2),
        "grid_speedup_vs_pyctcdecode_one_core": round(peer["seconds"] / ours_serial, 2),
        "grid_wer_diff_vs_pyctcdecode": round(ours_best["wer"] - peer_best["wer"], 3),
        "grid_amortization": round(ours_serial / (len(points) * float(np.mean(alone))), 3),
        "grid_parallel_speedup": round(ours_serial / ours_parallel, 2),
        "grid": f"{t['alpha_count']}x{t['beta_count']}", "points": len(points), "utterances": len(refs),
        "frames": int(sum(len(x) for x in logprobs)), "beam_width": cfg.beam_size,
        "ours_beam_threshold": cfg.beam_threshold, "workers": workers, "cores": cores,
        "ours_grid_seconds": round(ours_parallel, 2), "ours_grid_seconds_one_worker": round(ours_serial, 2),
        "ours_point_alone_seconds_mean": round(float(np.mean(alone)), 4), "points_timed_alone": len(alone),
        "pyctcdecode_grid_seconds": round(peer["seconds"], 2),
        "pyctcdecode_point_seconds_median": round(median([p["seconds"] for p in peer["points"]]), 4),
        "ours_best": {k: ours_best[k] for k in ("alpha", "beta", "wer", "cer")},
        "pyctcdecode_best": {k: round(peer_best[k], 4) for k in ("alpha", "beta", "wer", "cer")},
        "ours_at_decode_threshold": {"beam_threshold": decode.beam_threshold, "grid_seconds": round(wide_seconds, 2),
                                     **{k: wide_best[k] for k in ("alpha", "beta", "wer", "cer")}},
        "tuning_regret_pp": round(regret, 3),
        "repeats": args.repeats,
    })


if __name__ == "__main__":
    main()

"""The peer side of bench_decode.py: an alpha/beta grid with pyctcdecode.

Runs in the separate benchmark environment (.venv-bench: pyctcdecode installed with
--no-deps, it pins numpy<2), never in the product's. Usage:

    .venv-bench/bin/python bench/pyctcdecode_grid.py JOB.json OUT.json

JOB.json: {"logprobs": npz path (u0, u1, ...), "tokens": [...], "blank": "<blank>",
"space": "|", "lm": KenLM binary, "unigrams": [...], "beam_width": int,
"grid": [[alpha, beta], ...]}. The decoder is built once; each grid point calls
reset_params(alpha, beta) and decodes every utterance, as pyctcdecode's users tune.
OUT.json: {"seconds": whole grid, "build_seconds", "points": [{"alpha", "beta",
"seconds", "hyps": [...]}, ...]}.
"""

import json
import sys
import time

import numpy as np
from pyctcdecode import build_ctcdecoder


def main(job_path: str, out_path: str) -> None:
    job = json.load(open(job_path))
    with np.load(job["logprobs"]) as z:
        logprobs = [z[f"u{i}"] for i in range(len(z.files))]
    labels = ["" if t == job["blank"] else " " if t == job["space"] else t for t in job["tokens"]]
    t0 = time.perf_counter()
    decoder = build_ctcdecoder(labels, job["lm"], unigrams=job["unigrams"])
    built = time.perf_counter()
    points = []
    for alpha, beta in job["grid"]:
        t = time.perf_counter()
        decoder.reset_params(alpha=alpha, beta=beta)
        hyps = [decoder.decode(lp, beam_width=job["beam_width"]) for lp in logprobs]
        points.append({"alpha": alpha, "beta": beta, "seconds": time.perf_counter() - t, "hyps": hyps})
    total = time.perf_counter() - t0
    json.dump({"seconds": total, "build_seconds": built - t0, "points": points}, open(out_path, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""The peer side of bench_decode.py: an alpha/beta grid with pyctcdecode.

Runs in the separate benchmark environment (.venv-bench: pyctcdecode installed with
--no-deps, it pins numpy<2), never in the product's. Usage:

    .venv-bench/bin/python bench/pyctcdecode_grid.py JOB.json OUT.json

JOB.json: {"logprobs": npz path (u0, u1, ...), "tokens": [...], "blank": "<blank>",
"space": "|", "lm": KenLM binary, "unigrams": [...], "beam_width": int,
"beam_prune_logp": float, "token_min_logp": float, "unk_score_offset": float,
"workers": int, "grid": [[alpha, beta], ...]}.

The grid is run the way asrflow's tune stage runs its own (asrflow.decode.search.run_grid):
``workers`` processes forked once (1 = in this process), each building its decoder (and
loading the LM) once in the pool's initializer, grid points handed out one at a time
(chunksize 1); at each point the worker calls reset_params(alpha, beta) and decodes every
utterance, as pyctcdecode's users tune. The clock covers the pool's start, the builds and
every decode, as the other side's does.
OUT.json: {"seconds": whole grid, "points": [{"alpha", "beta", "seconds", "hyps": [...]}, ...]}.
"""

import json
import multiprocessing as mp
import sys
import time

import numpy as np
from pyctcdecode import build_ctcdecoder

_state = {}


def _init(job: dict, logprobs: list) -> None:
    labels = ["" if t == job["blank"] else " " if t == job["space"] else t for t in job["tokens"]]
    _state["decoder"] = build_ctcdecoder(labels, job["lm"], unigrams=job["unigrams"],
                                         unk_score_offset=job["unk_score_offset"])
    _state["job"], _state["logprobs"] = job, logprobs


def _point(point: tuple) -> dict:
    alpha, beta = point
    job, decoder = _state["job"], _state["decoder"]
    t = time.perf_counter()
    decoder.reset_params(alpha=alpha, beta=beta)
    hyps = [decoder.decode(lp, beam_width=job["beam_width"], beam_prune_logp=job["beam_prune_logp"],
                           token_min_logp=job["token_min_logp"]) for lp in _state["logprobs"]]
    return {"alpha": alpha, "beta": beta, "seconds": time.perf_counter() - t, "hyps": hyps}


def main(job_path: str, out_path: str) -> None:
    job = json.load(open(job_path))
    with np.load(job["logprobs"]) as z:
        logprobs = [z[f"u{i}"] for i in range(len(z.files))]
    grid = [tuple(p) for p in job["grid"]]
    workers = min(job["workers"], len(grid))
    t0 = time.perf_counter()
    if workers <= 1:
        _init(job, logprobs)
        points = [_point(p) for p in grid]
    else:
        with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(job, logprobs)) as pool:
            points = pool.map(_point, grid, chunksize=1)
    json.dump({"seconds": time.perf_counter() - t0, "workers": workers, "points": points}, open(out_path, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:3])

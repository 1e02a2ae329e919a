"""Alpha/beta grid search for the beam-search decoder on cached dev log-probs.

The acoustic model runs once (see :func:`asrflow.decode.logprobs.compute_logprobs`); each
worker process loads the KenLM model and lexicon trie once, then decodes every grid point
it is given. Serial and parallel runs produce the same table. :func:`tune` is the whole
search as the tune stage runs it.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asrflow.decode.beam import BeamConfig, BeamSearch, greedy_decode
from asrflow.decode.logprobs import compute_logprobs
from asrflow.models.checkpoint import checkpoint_vocab
from asrflow.scoring.metrics import best_point, corpus_rates
from asrflow.text.vocab import Tokenizer


@dataclass(frozen=True)
class GridPoint:
    alpha: float
    beta: float


def make_grid(alpha: tuple[float, float], alpha_count: int, beta: tuple[float, float], beta_count: int) -> list[GridPoint]:
    """alpha_count x beta_count points, linearly spaced over the closed ranges."""
    alphas = np.linspace(alpha[0], alpha[1], alpha_count) if alpha_count > 1 else np.array([alpha[0]])
    betas = np.linspace(beta[0], beta[1], beta_count) if beta_count > 1 else np.array([beta[0]])
    return [GridPoint(round(float(a), 6), round(float(b), 6)) for a in alphas for b in betas]


def grid_counts(tune: dict[str, Any], beside: bool = False) -> tuple[int, int]:
    """(alpha_count, beta_count) of the ``tune`` block's grid; ``beside``: of the grid the mode
    tuned beside ``decode.mode`` searches (``tune.beside_counts``, when set)."""
    counts = tune["beside_counts"] if beside else None
    return tuple(counts) if counts else (tune["alpha_count"], tune["beta_count"])


def grid_from_params(tune: dict[str, Any], beside: bool = False) -> list[GridPoint]:
    """The grid the ``tune`` block of params.yaml describes (``beside``: see :func:`grid_counts`)."""
    a, b = grid_counts(tune, beside)
    return make_grid(tuple(tune["alpha"]), a, tuple(tune["beta"]), b)


def alternative_mode(params: dict[str, Any], subword: bool = False) -> str | None:
    """The decoding mode tuned and evaluated beside ``decode.mode``: lexicon-free with the
    character LM when the lm stage builds one (``lm.char_order``, for a character model, not
    a ``subword`` one) and the headline is the lexicon (so the report shows which handles
    out-of-vocabulary words better)."""
    lexicon, char_lm = params["decode"]["mode"] == "lexicon", params["lm"]["char_order"] and not subword
    return "lexicon_free" if lexicon and char_lm else None


def search_config(params: dict[str, Any]) -> BeamConfig:
    """The decoder settings the grid is searched with: ``decode``, with
    ``tune.beam_threshold`` (when set) pruning harder than the final decoding."""
    decode = BeamConfig(**params["decode"])
    return dataclasses.replace(decode, beam_threshold=params["tune"]["beam_threshold"] or decode.beam_threshold)


_worker: dict = {}


def _init_worker(tokens, lm_dir, cfg, logprobs, refs) -> None:
    _worker["search"] = BeamSearch(tokens, lm_dir, cfg)
    _worker["logprobs"], _worker["refs"] = logprobs, refs


def _score_point(point: GridPoint) -> dict[str, float]:
    search: BeamSearch = _worker["search"]
    search.set_weights(point.alpha, point.beta)
    hyps = [search.decode(lp) for lp in _worker["logprobs"]]
    r = corpus_rates(_worker["refs"], hyps)
    return {"alpha": point.alpha, "beta": point.beta, "wer": round(r["wer"], 4), "cer": round(r["cer"], 4)}


def run_grid(points: list[GridPoint], logprobs: list[np.ndarray], refs: list[str], tokens: list[str],
             lm_dir: str | Path, cfg: BeamConfig, workers: int = 0) -> list[dict[str, float]]:
    """Score every grid point; returns rows in grid order (alpha, beta, wer, cer).

    ``workers`` processes (0 = all cores, 1 = in this process), each with its own
    decoder and the LM loaded once; points are handed out one at a time, so workers
    stay busy whatever a point costs. The log-probs reach workers by fork, not pickling.
    """
    workers = min(workers or os.cpu_count() or 1, len(points))
    args = (tokens, str(lm_dir), cfg, logprobs, refs)
    if workers <= 1:
        _init_worker(*args)
        try:
            return [_score_point(p) for p in points]
        finally:
            _worker.clear()
    with mp.get_context("fork").Pool(workers, initializer=_init_worker, initargs=args) as pool:
        return pool.map(_score_point, points, chunksize=1)


@dataclass(frozen=True)
class TuneResult:
    """What :func:`tune` found: every grid point's dev WER/CER (grid order), the best point,
    greedy decoding's dev rates for comparison, and what it cost."""

    grid: list[dict[str, float]]
    best: dict[str, float]
    greedy: dict[str, float]
    utterances: int
    cfg: BeamConfig              # the settings the grid was searched with
    grid_seconds: float
    acoustic_seconds: float      # acoustic model time (as measured when computed, if cached)
    subword: bool                # the model's units are subword pieces (no character LM)
    counts: tuple[int, int]      # the grid searched: alpha points x beta points


def tune(model_pt: str | Path, dev_manifest: str | Path, lm_dir: str | Path, cache_dir: str | Path,
         params: dict[str, Any], mode: str | None = None, metric: str = "wer", beside: bool = False) -> TuneResult:
    """Search params.yaml's ``tune`` grid for the alpha/beta with the lowest dev ``metric``
    (WER, or CER for a character language).

    The acoustic model runs once over the first ``tune.max_utterances`` dev utterances (the
    log-probs are cached in ``cache_dir``); the grid is decoded with :func:`search_config`'s
    settings (in decoding ``mode`` if given; ``beside``: on the grid of the mode tuned beside
    ``decode.mode``) on ``tune.workers`` processes. Ties go to the first point in grid order.
    """
    t = params["tune"]
    logprobs, rows, am_seconds, _ = compute_logprobs(model_pt, dev_manifest, cache_dir, t["max_utterances"])
    refs = rows["text"].tolist()
    tokens = checkpoint_vocab(model_pt)
    tokenizer = Tokenizer(tokens)
    greedy = corpus_rates(refs, [greedy_decode(lp, tokenizer) for lp in logprobs])
    cfg = search_config(params)
    if mode:
        cfg = dataclasses.replace(cfg, mode=mode)
    t0 = time.perf_counter()
    grid = run_grid(grid_from_params(t, beside), logprobs, refs, tokens, lm_dir, cfg, t["workers"])
    return TuneResult(grid, best_point(grid, metric), greedy, len(refs), cfg, time.perf_counter() - t0, am_seconds,
                      tokenizer.subword, grid_counts(t, beside))

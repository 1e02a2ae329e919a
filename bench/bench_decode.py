"""The alpha/beta grid: ours (flashlight + KenLM) vs pyctcdecode, like for like.

    python bench/bench_decode.py [--dataset synth] [--repeats 3] [--compare-grid 5x3]
                                 [--compare-utterances 40] [--peer-python .venv-bench/bin/python]

Both decoders get identical inputs: the tune stage's cached dev log-probs (the acoustic
model is not re-run), the same KenLM binary (the lm stage's lm.bin), the same word list
(our lexicon = pyctcdecode's unigrams) and the same beam width. The pipeline's outputs
are made first if missing (`snakemake models/<d> data/<d>/lm data/<d>/manifests`).

The comparison (a grid over params.yaml's tune ranges at --compare-grid counts, on the
first --compare-utterances of the tune stage's dev utterances: pyctcdecode at our
settings takes tens of seconds per point on all 150, hours for the 360-point grid) gives
both sides the same settings:
- pruning: the same threshold on both (pyctcdecode's beam_prune_logp = -threshold): the
  evaluate stage's decode.beam_threshold for the headline figures, tune.beam_threshold
  for the *_tune_threshold one; every token considered at every frame on both
  (decode.token_beam 0; pyctcdecode's token_min_logp below its own clipping floor);
- vocabulary: both lexicon-constrained. Ours spells only lexicon words (unknown word
  score -inf); pyctcdecode gets unk_score_offset -1000 (a word or prefix outside its
  unigrams is pruned at once). pyctcdecode scales that offset by alpha, so in the alpha 0
  column it decodes open-vocabulary: a difference of rule that cannot be matched;
- processes: each side runs the grid in N processes forked once, one decoder (and LM)
  per process, points handed out one at a time (ours: asrflow.decode.search.run_grid,
  as the tune stage runs it; pyctcdecode: bench/pyctcdecode_grid.py, the same pool);
- repeats: --repeats timed runs of each configuration on both sides, alternating
  between the sides; medians.

Figures (time = wall seconds for the whole comparison grid):
- grid_speedup_vs_pyctcdecode_same_cores: pyctcdecode on all cores / ours on all cores;
- grid_speedup_vs_pyctcdecode_one_core: both in one process;
- grid_speedup_vs_pyctcdecode: pyctcdecode in one process (as its users run it: it has
  no pool of its own) / ours on all cores (as the tune stage runs it): unequal cores,
  kept under its old name to compare across commits;
- grid_speedup_vs_pyctcdecode_same_cores_tune_threshold: the same-cores figure at
  tune.beam_threshold;
- grid_wer_diff_vs_pyctcdecode: our best comparison-grid WER - pyctcdecode's, in
  percentage points (negative = ours better), both scored by asrflow.scoring.metrics;
  best_inside_grid says whether each side's best point is off the grid's edges (on an
  edge, the true best may lie outside the range and the WER comparison is unsettled).
Ours alone, on params.yaml's full grid (default 45 x 8) and all tune utterances:
- grid_amortization: the grid on one worker / (points x the mean time of one point
  decoded alone, LM load and lexicon trie included), over a stride sample of points;
- grid_parallel_speedup: the grid on 1 worker / on all cores (medians of --repeats);
- tuning_regret_pp: the dev WER, decoded at decode.beam_threshold, of the point the
  grid picks at tune.beam_threshold minus the best point's there.
Prints one JSON object as its last line and writes reports/bench/decode.json.
"""

from __future__ import annotations

import argparse
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
from asrflow.scoring.metrics import best_point, corpus_rates, grid_edges
from asrflow.text.vocab import BLANK, SPACE
from asrflow.models.checkpoint import checkpoint_vocab
from asrflow.decode.search import grid_from_params, make_grid, run_grid, search_config


def ensure_pipeline_outputs(dataset: str) -> None:
    targets = [f"models/{dataset}", f"data/{dataset}/lm", f"data/{dataset}/manifests"]
    if all((REPO / t).exists() for t in targets):
        return
    subprocess.run(["snakemake", "-j", str(os.cpu_count() or 1), *targets], cwd=REPO, check=True)


def timed_grid(points, logprobs, refs, tokens, lm_dir, cfg, workers):
    t = time.perf_counter()
    rows = run_grid(points, logprobs, refs, tokens, lm_dir, cfg, workers)
    return time.perf_counter() - t, rows


UNK_OFFSET = -1000.0      # pyctcdecode's unknown-word offset: prunes any word outside the unigrams
TOKEN_MIN_LOGP = -1000.0  # below pyctcdecode's clip floor (log 1e-15): every token at every frame


def peer_grid(peer_python: str, logprobs, tokens, lm_dir: Path, points, cfg: BeamConfig, workers: int) -> dict:
    """pyctcdecode over ``points`` with ``cfg``'s beam width and threshold, in ``workers`` processes."""
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        lp_path = Path(tmp) / "logprobs.npz"
        np.savez(lp_path, **{f"u{i}": a for i, a in enumerate(logprobs)})
        unigrams = [line.split("\t")[0] for line in (lm_dir / "lexicon.txt").read_text().splitlines()]
        job = {"logprobs": str(lp_path), "tokens": tokens, "blank": BLANK, "space": SPACE,
               "lm": str(lm_dir / "lm.bin"), "unigrams": unigrams, "beam_width": cfg.beam_size,
               "beam_prune_logp": -cfg.beam_threshold, "token_min_logp": TOKEN_MIN_LOGP,
               "unk_score_offset": UNK_OFFSET, "workers": workers, "grid": [[p.alpha, p.beta] for p in points]}
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        subprocess.run([peer_python, str(REPO / "bench/pyctcdecode_grid.py"), str(Path(tmp) / "job.json"),
                        str(Path(tmp) / "out.json")], check=True)
        return json.loads((Path(tmp) / "out.json").read_text())


def parse_grid(text: str) -> tuple[int, int]:
    a, _, b = text.partition("x")
    return int(a), int(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="synth")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compare-grid", type=parse_grid, default=(5, 3), metavar="AxB",
                    help="alpha x beta counts of the comparison grid (over tune's ranges)")
    ap.add_argument("--compare-utterances", type=int, default=40, help="dev utterances in the comparison")
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
    decode, tune_cfg = BeamConfig(**params["decode"]), search_config(params)
    if decode.mode != "lexicon" or decode.token_beam:
        raise SystemExit("bench_decode compares the lexicon decoder with every token per frame "
                         "(decode.mode lexicon, decode.token_beam 0)")
    cores = os.cpu_count() or 1
    full = grid_from_params(t)
    workers = min(t["workers"] or cores, len(full))

    # -- the like-for-like comparison --------------------------------------------------------
    n = min(args.compare_utterances, len(refs))
    c_lp, c_refs = logprobs[:n], refs[:n]
    ca, cb = args.compare_grid
    compare = make_grid(tuple(t["alpha"]), ca, tuple(t["beta"]), cb)
    cw = min(workers, len(compare))
    configs = {  # name: (our settings, processes)
        "same_cores": (decode, cw), "one_core": (decode, 1),
        "same_cores_tune_threshold": (tune_cfg, cw)}
    print(f"comparison: {len(compare)} points ({ca}x{cb}) x {n} utterances ({sum(len(x) for x in c_lp)} frames), "
          f"beam {decode.beam_size}, every token per frame, lexicon-constrained; thresholds "
          f"{decode.beam_threshold} and {tune_cfg.beam_threshold}; {cw} processes for same_cores", flush=True)
    ours_s: dict[str, list[float]] = {k: [] for k in configs}
    peer_s: dict[str, list[float]] = {k: [] for k in configs}
    tables: dict[str, tuple[list, list]] = {}
    for r in range(args.repeats):  # alternate sides and configurations, so drift hits all alike
        for name, (cfg, procs) in configs.items():
            s, ours_rows = timed_grid(compare, c_lp, c_refs, tokens, lm_dir, cfg, procs)
            peer = peer_grid(args.peer_python, c_lp, tokens, lm_dir, compare, cfg, procs)
            ours_s[name].append(s)
            peer_s[name].append(peer["seconds"])
            peer_rows = [{"alpha": p["alpha"], "beta": p["beta"], **corpus_rates(c_refs, p["hyps"])}
                         for p in peer["points"]]
            if name in tables:
                assert tables[name] == (ours_rows, peer_rows), f"{name}: a repeat decoded differently"
            tables[name] = (ours_rows, peer_rows)
            print(f"repeat {r + 1} {name}: ours {s:.2f} s, pyctcdecode {peer['seconds']:.2f} s "
                  f"({procs} process{'es' if procs > 1 else ''}, threshold {cfg.beam_threshold})", flush=True)
    assert tables["same_cores"] == tables["one_core"], "the process count changed the results"
    ours_rows, peer_rows = tables["same_cores"]
    ours_best, peer_best = best_point(ours_rows), best_point(peer_rows)
    edges = {"ours": grid_edges(ours_rows, ours_best), "pyctcdecode": grid_edges(peer_rows, peer_best)}
    for side, e in edges.items():
        if e:
            print(f"WARNING: {side}'s best point is on the comparison grid's edge ({'; '.join(e)}): "
                  "widen tune's ranges", flush=True)
    med = {k: (median(ours_s[k]), median(peer_s[k])) for k in configs}

    # -- ours alone, on the full grid --------------------------------------------------------
    print(f"full grid: {len(full)} points x {len(refs)} utterances, threshold {tune_cfg.beam_threshold}; "
          f"1 and {workers} workers", flush=True)
    serial, parallel, table = [], [], None
    for _ in range(args.repeats):
        s, rows1 = timed_grid(full, logprobs, refs, tokens, lm_dir, tune_cfg, 1)
        p, rows2 = timed_grid(full, logprobs, refs, tokens, lm_dir, tune_cfg, workers)
        assert rows1 == rows2, "serial and parallel grids differ"
        serial.append(s)
        parallel.append(p)
        table = rows1
        print(f"ours: 1 worker {s:.2f} s, {workers} workers {p:.2f} s", flush=True)
    stride = max(1, len(full) // args.single_points)
    alone = [timed_grid([pt], logprobs, refs, tokens, lm_dir, tune_cfg, 1)[0] for pt in full[::stride]]
    picked = best_point(table)
    wide_seconds, wide = timed_grid(full, logprobs, refs, tokens, lm_dir, decode, workers)
    wide_best = best_point(wide)
    wide_wer = {(r["alpha"], r["beta"]): r["wer"] for r in wide}
    regret = wide_wer[(picked["alpha"], picked["beta"])] - wide_best["wer"]
    ours_serial = median(serial)

    def best(row: dict, nd: int = 4) -> dict:
        return {k: round(row[k], nd) for k in ("alpha", "beta", "wer", "cer")}

    emit("decode", {
        "grid_speedup_vs_pyctcdecode_same_cores": round(med["same_cores"][1] / med["same_cores"][0], 2),
        "grid_speedup_vs_pyctcdecode_one_core": round(med["one_core"][1] / med["one_core"][0], 2),
        "grid_speedup_vs_pyctcdecode": round(med["one_core"][1] / med["same_cores"][0], 2),
        "grid_speedup_vs_pyctcdecode_same_cores_tune_threshold":
            round(med["same_cores_tune_threshold"][1] / med["same_cores_tune_threshold"][0], 2),
        "grid_wer_diff_vs_pyctcdecode": round(ours_best["wer"] - peer_best["wer"], 3),
        "best_inside_grid": {side: not e for side, e in edges.items()},
        "best_on_edge": {side: e for side, e in edges.items() if e},
        "comparison": {
            "grid": f"{ca}x{cb}", "points": len(compare), "utterances": n,
            "frames": int(sum(len(x) for x in c_lp)), "beam_width": decode.beam_size,
            "beam_threshold": decode.beam_threshold, "tune_beam_threshold": tune_cfg.beam_threshold,
            "tokens_per_frame": "all", "vocabulary": "lexicon-constrained on both sides",
            "pyctcdecode_unk_score_offset": UNK_OFFSET, "pyctcdecode_token_min_logp": TOKEN_MIN_LOGP,
            "processes_same_cores": cw,
            "ours_seconds": {k: round(v[0], 2) for k, v in med.items()},
            "pyctcdecode_seconds": {k: round(v[1], 2) for k, v in med.items()},
            "ours_best": best(ours_best), "pyctcdecode_best": best(peer_best),
        },
        "grid_amortization": round(ours_serial / (len(full) * float(np.mean(alone))), 3),
        "grid_parallel_speedup": round(ours_serial / median(parallel), 2),
        "tuning_regret_pp": round(regret, 3),
        "full_grid": {
            "grid": f"{t['alpha_count']}x{t['beta_count']}", "points": len(full), "utterances": len(refs),
            "frames": int(sum(len(x) for x in logprobs)), "beam_threshold": tune_cfg.beam_threshold,
            "workers": workers, "seconds": round(median(parallel), 2), "seconds_one_worker": round(ours_serial, 2),
            "point_alone_seconds_mean": round(float(np.mean(alone)), 4), "points_timed_alone": len(alone),
            "best": best(picked),
            "at_decode_threshold": {"beam_threshold": decode.beam_threshold, "seconds": round(wide_seconds, 2),
                                    **best(wide_best)},
        },
        "cores": cores, "repeats": args.repeats,
    })


if __name__ == "__main__":
    main()

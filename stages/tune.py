"""Stage 'tune': alpha/beta grid for beam search + KenLM on dev, acoustic model run once."""

import time
from pathlib import Path

from asrflow.decode.beam import compute_logprobs, greedy_decode
from asrflow.scoring.metrics import best_point, corpus_rates
from asrflow.evaluate.report import plot_surface
from asrflow.pipeline.stagekit import Context, main, write_csv, write_json
from asrflow.text.vocab import Tokenizer
from asrflow.train.loop import checkpoint_vocab
from asrflow.decode.search import grid_from_params, run_grid, search_config


def add_args(p):
    p.add_argument("--manifests", required=True)
    p.add_argument("--model", required=True, help="model directory holding model.pt")
    p.add_argument("--lm", required=True, help="LM directory (lm.bin + lexicon.txt, or char.bin)")
    p.add_argument("--cache", required=True, help="log-prob cache directory (content-addressed)")
    p.add_argument("--out", required=True, help="tuning results directory (best.json, grid.csv, surface.png)")
    p.add_argument("--metrics", required=True)
    p.add_argument("--plots", required=True, help="grid CSV for DVC plots")


def run(ctx: Context) -> dict:
    a, t = ctx.args, ctx.params["tune"]
    model = f"{a.model}/model.pt"
    logprobs, rows, am_seconds, _ = compute_logprobs(model, f"{a.manifests}/dev.parquet", a.cache, t["max_utterances"])
    refs = rows["text"].tolist()
    tokens = checkpoint_vocab(model)
    greedy = corpus_rates(refs, [greedy_decode(lp, Tokenizer(tokens)) for lp in logprobs])
    points = grid_from_params(t)
    cfg = search_config(ctx.params)  # tune.beam_threshold may prune harder than the final decoding
    t0 = time.perf_counter()
    grid = run_grid(points, logprobs, refs, tokens, a.lm, cfg, t["workers"])
    grid_seconds = time.perf_counter() - t0
    best = best_point(grid)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "grid.csv", grid)
    write_csv(Path(a.plots), grid)
    plot_surface(grid, out / "surface.png", f"{ctx.dataset}: dev WER over the alpha/beta grid ({cfg.mode})")
    write_json(out / "best.json", {"alpha": best["alpha"], "beta": best["beta"], **ctx.params["decode"]})
    ctx.log(f"best alpha={best['alpha']} beta={best['beta']}: dev WER {best['wer']:.2f}% "
            f"(greedy {greedy['wer']:.2f}%); {t['alpha_count']}x{t['beta_count']} grid, {len(refs)} utterances, "
            f"{grid_seconds:.1f} s")
    for i, row in enumerate(grid):  # the whole grid, written in batches when the stage ends
        ctx.tracker.log_metrics({"grid_alpha": row["alpha"], "grid_beta": row["beta"],
                                 "grid_wer": row["wer"], "grid_cer": row["cer"]}, step=i)
    ctx.tracker.set_tag("asrflow.best_point", f"alpha={best['alpha']},beta={best['beta']}")
    ctx.tracker.set_tag("asrflow.best_step", str(grid.index(best)))
    ctx.tracker.log_artifact(out / "grid.csv")
    ctx.tracker.log_artifact(out / "surface.png")
    return {"alpha": best["alpha"], "beta": best["beta"], "dev_wer": best["wer"], "dev_cer": best["cer"],
            "greedy_dev_wer": round(greedy["wer"], 4), "greedy_dev_cer": round(greedy["cer"], 4),
            "points": len(grid), "alpha_count": t["alpha_count"], "beta_count": t["beta_count"],
            "utterances": len(refs), "beam_size": cfg.beam_size, "beam_threshold": cfg.beam_threshold,
            "mode": cfg.mode, "workers": t["workers"],
            "grid_seconds": round(grid_seconds, 2), "acoustic_seconds": round(am_seconds, 2)}


if __name__ == "__main__":
    raise SystemExit(main("tune", add_args, run))

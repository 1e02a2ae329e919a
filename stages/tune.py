"""Stage 'tune': beam search's alpha/beta on dev over a grid, per decoding mode; the acoustic model runs once."""

from pathlib import Path

from asrflow.common.files import write_csv, write_json
from asrflow.decode.search import alternative_mode, tune
from asrflow.evaluate.plots import plot_surface
from asrflow.pipeline.stagekit import Context, main
from asrflow.scoring.metrics import grid_edges, headline


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
    m = headline(ctx.params["datasets"][ctx.dataset]["language"])  # tuned by WER, or CER for Mandarin
    inputs = (f"{a.model}/model.pt", f"{a.manifests}/dev.parquet", a.lm, a.cache, ctx.params)
    # Mandarin decodes lexicon-free: with characters as words, a lexicon search repeats them
    r = tune(*inputs, metric=m, mode="lexicon_free" if m == "cer" else None)
    best, out, M, (ac, bc), secs = r.best, Path(a.out), m.upper(), r.counts, round(r.grid_seconds, 2)
    write_csv(out / "grid.csv", r.grid)
    write_csv(Path(a.plots), r.grid)
    plot_surface(r.grid, out / "surface.png", f"{ctx.dataset}: dev {M} over the alpha/beta grid ({r.cfg.mode})", m)
    chosen = {"alpha": best["alpha"], "beta": best["beta"], **ctx.params["decode"], "mode": r.cfg.mode}
    metrics = {"alpha": best["alpha"], "beta": best["beta"], "dev_wer": best["wer"], "dev_cer": best["cer"],
               "greedy_dev_wer": round(r.greedy["wer"], 4), "greedy_dev_cer": round(r.greedy["cer"], 4),
               "points": len(r.grid), "utterances": r.utterances}
    # the settings searched with and what the search cost: the lineage record, not figures to compare
    ctx.lineage.update({"alpha_count": ac, "beta_count": bc, "beam_size": r.cfg.beam_size,
                        "beam_threshold": r.cfg.beam_threshold, "mode": r.cfg.mode, "workers": t["workers"],
                        "grid_seconds": secs, "acoustic_seconds": round(r.acoustic_seconds, 2)})
    ctx.log(f"best alpha={best['alpha']} beta={best['beta']}: dev {M} {best[m]:.2f}% (greedy {r.greedy[m]:.2f}%); "
            f"{ac}x{bc} grid, {r.utterances} utterances, {secs} s")
    for edge in grid_edges(r.grid, best):
        ctx.log(f"warning: the best point sits on the grid's edge ({edge}): widen tune.alpha/tune.beta")
    other = alternative_mode(ctx.params, r.subword) if r.cfg.mode == ctx.params["decode"]["mode"] else None
    if other:  # evaluated beside the headline mode: its own alpha/beta, on tune.beside_counts' grid
        alt = tune(*inputs, mode=other, metric=m, beside=True)
        write_csv(out / f"grid-{other}.csv", alt.grid)
        chosen[other] = {"alpha": alt.best["alpha"], "beta": alt.best["beta"]}
        metrics.update({f"{other}_alpha": alt.best["alpha"], f"{other}_beta": alt.best["beta"],
                        f"{other}_dev_wer": alt.best["wer"], f"{other}_dev_cer": alt.best["cer"]})
        (ac, bc), secs = alt.counts, round(alt.grid_seconds, 2)
        ctx.lineage.update({f"{other}_alpha_count": ac, f"{other}_beta_count": bc, f"{other}_grid_seconds": secs})
        ctx.log(f"{other}: best alpha={alt.best['alpha']} beta={alt.best['beta']}: dev {M} {alt.best[m]:.2f}%; "
                f"{ac}x{bc} grid, {secs} s")
        ctx.tracker.log_artifact(out / f"grid-{other}.csv")
    write_json(out / "best.json", chosen)
    ctx.tracker.log_dataset(f"{a.manifests}/dev.parquet", "dev")
    ctx.tracker.log_headline({k: v for k, v in metrics.items() if k not in ("points", "utterances")})
    for i, row in enumerate(r.grid):  # the whole grid, written in batches when the stage ends
        ctx.tracker.log_metrics({"grid_alpha": row["alpha"], "grid_beta": row["beta"],
                                 "grid_wer": row["wer"], "grid_cer": row["cer"]}, step=i)
    ctx.tracker.set_tag("asrflow.best_point", f"alpha={best['alpha']},beta={best['beta']}")
    ctx.tracker.set_tag("asrflow.best_step", str(r.grid.index(best)))
    ctx.tracker.log_artifact(out / "grid.csv")
    ctx.tracker.log_artifact(out / "surface.png")
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("tune", add_args, run))

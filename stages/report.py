"""Stage 'report': reports/<dataset>_wer.md with the error surface and learning curve beside it."""

from pathlib import Path

from asrflow.report import load_json, read_csv, write_report
from asrflow.stagekit import Context, main


def add_args(p):
    p.add_argument("--metrics-dir", required=True)
    p.add_argument("--plots-dir", required=True)
    p.add_argument("--out", required=True, help="markdown report path")


def run(ctx: Context) -> dict:
    mdir, pdir = Path(ctx.args.metrics_dir), Path(ctx.args.plots_dir)
    metrics = {s: load_json(mdir / f"{s}.json") for s in ("manifest", "lm", "train", "tune", "evaluate")}
    headline = write_report(ctx.dataset, metrics, read_csv(pdir / "learning_curve.csv"),
                            read_csv(pdir / "tune_grid.csv"), ctx.args.out)
    out = Path(ctx.args.out)
    for p in (out, out.with_name(f"{out.stem}_surface.png"), out.with_name(f"{out.stem}_curve.png")):
        ctx.tracker.log_artifact(p)
    return headline


if __name__ == "__main__":
    raise SystemExit(main("report", add_args, run))

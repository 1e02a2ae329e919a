"""Stage 'manifest': JSON lines + Parquet per split, and the rejects table."""

from asrflow.config import dataset_splits
from asrflow.manifest import ManifestConfig, write_manifests
from asrflow.stagekit import Context, main


def add_args(p):
    p.add_argument("--raw", required=True, help="corpus root holding LibriSpeech/<subset>/")
    p.add_argument("--out", required=True, help="manifest directory")
    p.add_argument("--metrics", required=True)


def run(ctx: Context) -> dict:
    m = ctx.params["manifest"]
    cfg = ManifestConfig(min_duration=m["min_duration"], max_duration=m["max_duration"],
                         allowed_chars=m["allowed_chars"], workers=m["workers"],
                         sample_rate=ctx.params["features"]["sample_rate"])
    metrics = write_manifests(ctx.args.raw, dataset_splits(ctx.params, ctx.dataset), ctx.args.out, cfg)
    ctx.tracker.log_artifact(f"{ctx.args.out}/rejects.parquet")
    if metrics["rejected"]:
        ctx.log(f"{metrics['rejected']} utterances rejected; see {ctx.args.out}/rejects.parquet")
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("manifest", add_args, run))

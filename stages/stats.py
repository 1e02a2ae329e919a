"""Stage 'stats': per-mel-bin mean/std over a seeded sample of the training manifest."""

from asrflow.features import FeatureConfig, compute_stats
from asrflow.manifest import read_manifest
from asrflow.stagekit import Context, main, write_json


def add_args(p):
    p.add_argument("--manifests", required=True)
    p.add_argument("--out", required=True, help="stats JSON")


def run(ctx: Context) -> dict:
    rows = read_manifest(f"{ctx.args.manifests}/train.parquet")
    n = min(ctx.params["stats"]["sample_size"], len(rows))
    sample = rows.sample(n=n, random_state=ctx.params["seed"]).sort_values("utt_id")
    stats = compute_stats(sample["audio_filepath"].tolist(), FeatureConfig.from_params(ctx.params["features"]))
    write_json(ctx.args.out, stats)
    ctx.tracker.log_artifact(ctx.args.out)
    return {"utterances": stats["utterances"], "frames": stats["frames"]}


if __name__ == "__main__":
    raise SystemExit(main("stats", add_args, run))

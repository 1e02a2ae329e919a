"""Stage 'stats': per-mel-bin mean/std over a seeded sample of the training manifest."""

from asrflow.features.logmel import FeatureConfig, compute_stats
from asrflow.data.manifest import ManifestAudio, read_manifest
from asrflow.common.files import write_json
from asrflow.pipeline.stagekit import Context, main


def add_args(p):
    p.add_argument("--manifests", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--out", required=True, help="stats JSON")


def run(ctx: Context) -> dict:
    path = f"{ctx.args.manifests}/train.parquet"
    rows = read_manifest(path)
    n = min(ctx.params["stats"]["sample_size"], len(rows))
    picked = sorted(rows.sample(n=n, random_state=ctx.params["seed"]).index)  # file order: sequential reads
    cfg = FeatureConfig.from_params(ctx.params["features"])
    audio = ManifestAudio(path, cfg.sample_rate)
    stats = compute_stats((audio[i] for i in picked), cfg)
    write_json(ctx.args.out, stats)
    ctx.tracker.log_artifact(ctx.args.out)
    return {"utterances": stats["utterances"], "frames": stats["frames"]}


if __name__ == "__main__":
    raise SystemExit(main("stats", add_args, run))

"""Stage 'train': DeepSpeech2-style CTC training (run through torchrun; DDP when several processes)."""

import csv
import dataclasses

from asrflow.features.logmel import FeatureConfig
from asrflow.pipeline.stagekit import Context, main
from asrflow.train.loop import train


def add_args(p):
    p.add_argument("--manifests", required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--out", required=True, help="model directory (model.pt)")
    p.add_argument("--checkpoints", required=True, help="per-epoch checkpoints (not a pipeline output)")
    p.add_argument("--metrics", required=True)
    p.add_argument("--plots", required=True, help="learning-curve CSV")


def run(ctx: Context) -> dict:
    a = ctx.args
    result = train(f"{a.manifests}/train.parquet", f"{a.manifests}/dev.parquet", a.stats, a.vocab, a.out, a.plots,
                   ctx.params["train"], FeatureConfig.from_params(ctx.params["features"]), ctx.params["seed"],
                   a.checkpoints, log=ctx.log)
    metrics = dataclasses.asdict(result)
    step_log = metrics.pop("step_log")
    if ctx.master:
        for row in step_log:  # per-step figures, written to MLflow in batches when the stage ends
            ctx.tracker.log_metrics({f"step_{k}": v for k, v in row.items() if k != "step"}, step=int(row["step"]))
        with open(a.plots) as f:
            for row in csv.DictReader(f):
                ctx.tracker.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        ctx.tracker.log_artifact(f"{a.out}/model.pt")
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("train", add_args, run))

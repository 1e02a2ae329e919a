"""Stage 'train': CTC training of the acoustic model (run through torchrun; DDP when several processes)."""

import csv
import dataclasses
from pathlib import Path

from asrflow.features.logmel import FeatureConfig
from asrflow.models.families import selected
from asrflow.pipeline.stagekit import Context, main
from asrflow.train.config import TrainConfig, TrainPaths
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
    paths = TrainPaths(train_manifest=Path(a.manifests, "train.parquet"), dev_manifest=Path(a.manifests, "dev.parquet"),
                       stats=Path(a.stats), vocab=Path(a.vocab), out_dir=Path(a.out), curve=Path(a.plots),
                       checkpoint_dir=Path(a.checkpoints))
    model, cfg = selected(ctx.params["model"]), TrainConfig.for_dataset(ctx.params, ctx.dataset)
    ctx.tracker.log_params({"train": cfg.to_params()})  # MLflow's train.*: what this dataset trained with
    result = train(paths, cfg, model,
                   FeatureConfig.from_params(ctx.params["features"]), ctx.params["seed"], log=ctx.log)
    metrics = dataclasses.asdict(result)
    if ctx.master:  # the manifests it learnt from and validated on: MLflow dataset inputs
        ctx.tracker.log_dataset(a.manifests + "/train.parquet", "train")
        ctx.tracker.log_dataset(a.manifests + "/dev.parquet", "dev")
    step_log = metrics.pop("step_log")
    ctx.lineage.update(train_seconds=metrics.pop("train_seconds"), device=metrics.pop("device"),
                       model_family=model["family"])
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

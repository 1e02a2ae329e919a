"""Stage 'manifest': the source extracts and lists each split; JSON lines + Parquet per split and the rejects table."""

from pathlib import Path

from asrflow.data.manifest import ManifestConfig, write_manifests
from asrflow.data.sources import source_of
from asrflow.models.frames import frame_geometry
from asrflow.pipeline.config import dataset_splits
from asrflow.pipeline.stagekit import Context, main


def add_args(p):
    p.add_argument("--archives", required=True, help="the download stage's archive directory")
    p.add_argument("--raw", required=True, help="where archives are extracted (LibriSpeech/<subset>/...)")
    p.add_argument("--out", required=True, help="manifest directory")
    p.add_argument("--metrics", required=True)


def run(ctx: Context) -> dict:
    source = source_of(ctx.params["datasets"][ctx.dataset])
    opened, extracted = source.open(Path(ctx.args.archives), Path(ctx.args.raw),
                                    ctx.params["download"]["max_extracted_gb"], ctx.log)
    cfg = ManifestConfig.from_params(ctx.params, frame_geometry(ctx.params["model"]), ctx.dataset)
    metrics = write_manifests(ctx.args.raw, dataset_splits(ctx.params, ctx.dataset), ctx.args.out, cfg,
                              source.lister(opened))
    metrics["archives_extracted"] = extracted
    if source.name == "combine":  # which corpus each row came from, at what training weight
        ctx.lineage["parts"] = source.module().summary(opened, Path(ctx.args.out))
    ctx.tracker.log_artifact(f"{ctx.args.out}/rejects.parquet")
    if metrics["rejected"]:
        reasons = ", ".join(f"{k[len('rejected_'):]}: {v}" for k, v in metrics.items() if k.startswith("rejected_"))
        ctx.log(f"{metrics['rejected']} utterances rejected ({reasons}); see {ctx.final(ctx.args.out)}/rejects.parquet")
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("manifest", add_args, run))

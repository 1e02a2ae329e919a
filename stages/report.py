"""Stage 'report': reports/<dataset>_wer.md with its figures, lineage and the comparison with
the dataset's previous runs in MLflow."""

from pathlib import Path

import pandas as pd

from asrflow.pipeline.config import eval_splits
from asrflow.pipeline.lineage import HashCache, lineage
from asrflow.pipeline.definition import REPORT_FILES
from asrflow.evaluate.report import load_json, read_csv, write_report
from asrflow.scoring.metrics import headline as headline_metric
from asrflow.scoring.results import top_errors
from asrflow.pipeline.stagekit import Context, main
from asrflow.pipeline.tracking import flatten, previous_runs, safe_params

STAGES = ("manifest", "lm", "train", "tune", "evaluate", "register")


def add_args(p):
    p.add_argument("--metrics-dir", required=True)
    p.add_argument("--lineage-dir", required=True, help="the stages' lineage records (MLflow runs, timings, names)")
    p.add_argument("--plots-dir", required=True)
    p.add_argument("--results", required=True, help="the evaluate stage's per-utterance results")
    p.add_argument("--manifests", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--lm", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--cache", required=True, help="where file hashes are remembered between runs")
    p.add_argument("--out", required=True, help="markdown report path")


def run(ctx: Context) -> dict:
    a = ctx.args
    mdir, pdir = Path(a.metrics_dir), Path(a.plots_dir)
    metrics = {s: load_json(mdir / f"{s}.json") for s in STAGES}
    records = {s: load_json(Path(a.lineage_dir) / f"{s}.json") for s in STAGES}
    products = {"manifests": a.manifests, "vocab": a.vocab, "lm": a.lm, "model": a.model}
    cache = HashCache(Path(a.cache) / "dvc-hashes.json")
    lin = lineage(products, cache=cache)
    cache.save()
    errors, metric = {}, headline_metric(ctx.params["datasets"][ctx.dataset]["language"])
    for split in eval_splits(ctx.params, ctx.dataset):
        recogs = pd.read_csv(Path(a.results) / f"{split}_recogs.tsv", sep="\t", keep_default_na=False, dtype=str)
        utts = list(zip(recogs["utt_id"], recogs["reference"], recogs["beam"]))
        errors[split] = top_errors(utts, ctx.params["evaluate"]["top_errors"], chars=metric == "cer")
    everything = ctx.params.unrecorded()  # to record and compare runs by, not read to compute anything
    params, previous = safe_params(flatten(everything)), previous_runs(everything["mlflow"], ctx.dataset, "report")
    headline = write_report(ctx.dataset, metrics, read_csv(pdir / "learning_curve.csv"),
                            read_csv(pdir / "tune_grid.csv"), a.out,
                            by_duration=read_csv(pdir / "wer_by_duration.csv", numeric=False), lineage=lin,
                            products=products, top_errors=errors, params=params, previous=previous,
                            records=records, metric=metric)
    ctx.log(f"lineage: git {lin['git_label']}; " + ", ".join(f"{k} {v[:8]}" for k, v in lin["dvc"].items()))
    # the whole configuration (the next report compares against it) and the lineage
    ctx.tracker.log_params(params)
    ctx.tracker.set_tag("asrflow.evaluate_run", records["evaluate"].get("mlflow_run_id", ""))
    if records["register"].get("model_version"):  # the version register made: its test figures; champion on dev WER
        ctx.tracker.annotate_model_version(records["register"], metrics["evaluate"], metrics["tune"]["dev_wer"])
    for name, digest in lin["dvc"].items():
        ctx.tracker.set_tag(f"asrflow.dvc.{name}", digest)
    out = Path(a.out)
    for suffix in REPORT_FILES:
        ctx.tracker.log_artifact(out.with_name(f"{out.stem}{suffix}"))
    return headline


if __name__ == "__main__":
    raise SystemExit(main("report", add_args, run))

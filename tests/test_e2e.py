"""The whole chain on a tiny synth config, through Snakemake and through `dvc repro`,
each in a throwaway copy of the repo, with the real tools (espeak-ng, sox, lmplz,
flashlight, torchrun, snakemake, dvc, mlflow)."""

import json
import math
import os
import re

import pytest
from mlflow.tracking import MlflowClient

from asrflow import pipeline as P
from asrflow.repro import product_digests
from conftest import copy_repo, run, tiny_params

STAGES = [s.name for s in P.STAGES]
ENV = {"ASRFLOW_INVOCATION": "", "MLFLOW_TRACKING_URI": ""}


def runs_by_stage(repo) -> dict[str, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{repo}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("asrflow-synth")
    out: dict[str, list] = {}
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        out.setdefault(r.info.run_name, []).append(r)
    return out


def assert_report_has_numbers(repo):
    report = (repo / "reports/synth_wer.md").read_text()
    row = re.search(r"^\| test \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", report, re.M)
    assert row, report
    assert all(math.isfinite(float(x)) and 0 <= float(x) for x in row.groups()[1:])
    ev = json.loads((repo / "metrics/synth/evaluate.json").read_text())
    assert ev["test"]["utterances"] == int(row.group(1)) > 0
    assert (repo / "reports/synth_wer_surface.png").stat().st_size > 1000
    assert (repo / "reports/synth_wer_curve.png").stat().st_size > 1000


SMK_DIGESTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def smk_repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("smk"), tiny_params())
    os.environ.pop("ASRFLOW_INVOCATION", None)
    run(["snakemake", "-j", "2", "reports/synth_wer.md"], cwd=repo, env=ENV)
    SMK_DIGESTS.update(product_digests(repo))
    return repo


def test_snakemake_run_produces_report(smk_repo):
    assert_report_has_numbers(smk_repo)


def test_dvc_status_clean_after_snakemake(smk_repo):
    out = run(["dvc", "status"], cwd=smk_repo).stdout
    assert "up to date" in out, out


def test_mlflow_has_one_run_per_stage_grouped(smk_repo):
    runs = runs_by_stage(smk_repo)
    assert sorted(runs) == sorted(STAGES)
    invocations = {r.data.tags["asrflow_invocation"] for rs in runs.values() for r in rs}
    assert len(invocations) == 1 and next(iter(invocations)).startswith("snakemake-")
    assert all(r.info.status == "FINISHED" for rs in runs.values() for r in rs)
    train = runs["train"][0]
    assert train.data.params["train.epochs"] == "2" and train.data.metrics["params"] > 0


def test_param_edit_reruns_train_and_downstream_only(smk_repo):
    params = (smk_repo / "params.yaml").read_text()
    (smk_repo / "params.yaml").write_text(re.sub(r"(?m)^  lr: .*$", "  lr: 0.002", params, count=1))
    dry = run(["snakemake", "-n", "reports/synth_wer.md"], cwd=smk_repo, env=ENV).stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.split("Job stats:")[1].split("Reasons")[0], re.M))
    jobs.pop("total", None)
    assert set(jobs) == {"train", "tune", "evaluate", "report"}, dry
    out = run(["dvc", "repro"], cwd=smk_repo, env=ENV).stdout
    for s in ("download", "manifest", "stats", "vocab", "lm"):
        assert f"Stage '{s}' didn't change, skipping" in out, out
    for s in ("train", "tune", "evaluate", "report"):
        assert f"Running stage '{s}'" in out, out
    assert "up to date" in run(["dvc", "status"], cwd=smk_repo).stdout
    assert_report_has_numbers(smk_repo)
    runs = runs_by_stage(smk_repo)
    assert len(runs["train"]) == 2 and len(runs["download"]) == 1
    dvc_inv = {r.data.tags["asrflow_invocation"] for r in runs["train"] + runs["report"]} - \
        {runs["download"][0].data.tags["asrflow_invocation"]}
    assert len(dvc_inv) == 1 and next(iter(dvc_inv)).startswith("dvc-"), dvc_inv


def test_dvc_repro_from_scratch_matches_snakemake_byte_for_byte(smk_repo, tmp_path):
    """`dvc repro` in a fresh copy runs every stage, and its products equal the Snakemake run's
    byte for byte: corpus archives, manifests, Parquet with the embedded FLACs, vocab, stats, LM, checkpoint (bit-reproducible
    CPU training with a fixed seed), tuning table, per-utterance results and report."""
    repo = copy_repo(tmp_path, tiny_params())
    out = run(["dvc", "repro"], cwd=repo, env=ENV).stdout
    assert all(f"Running stage '{s}'" in out for s in STAGES), out
    assert_report_has_numbers(repo)
    shown = run(["dvc", "metrics", "show", "--json"], cwd=repo).stdout
    assert "beam_wer" in shown
    runs = runs_by_stage(repo)
    assert sorted(runs) == sorted(STAGES)
    assert len({r.data.tags["asrflow_invocation"] for rs in runs.values() for r in rs}) == 1
    ours = product_digests(repo)
    assert len(ours) > 15 and "models/synth/model.pt" in ours
    assert {k for k in ours if k.endswith(".tar.gz")} == {f"data/synth/archives/{s}.tar.gz" for s in ("train", "dev", "test")}
    assert ours == SMK_DIGESTS, sorted(k for k in ours if ours[k] != SMK_DIGESTS.get(k))

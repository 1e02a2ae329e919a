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
    # tune: one run holding the whole grid (step = point), the best point tagged, table + surface attached
    tune = runs["tune"][0]
    client = MlflowClient(tracking_uri=f"sqlite:///{smk_repo}/mlruns/mlflow.db")
    grid = (smk_repo / "results/synth/tune/grid.csv").read_text().splitlines()[1:]
    history = {m.step: m.value for m in client.get_metric_history(tune.info.run_id, "grid_wer")}
    assert sorted(history) == list(range(len(grid))) == list(range(6))
    assert [history[i] for i in range(6)] == [float(row.split(",")[2]) for row in grid]
    best = json.loads((smk_repo / "results/synth/tune/best.json").read_text())
    assert tune.data.tags["asrflow.best_point"] == f"alpha={best['alpha']},beta={best['beta']}"
    assert {"grid.csv", "surface.png"} <= {a.path for a in client.list_artifacts(tune.info.run_id)}


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


def test_logprob_cache_never_serves_another_checkpoint(smk_repo, tmp_path):
    """Same manifest, same utterance count, different weights: a new key, recomputed outputs."""
    import numpy as np
    import torch

    from asrflow.decode import compute_logprobs

    model, dev = smk_repo / "models/synth/model.pt", smk_repo / "data/synth/manifests/dev.parquet"
    first, rows, seconds = compute_logprobs(model, dev, tmp_path / "cache", limit=4)
    assert seconds > 0 and len(first) == len(rows) == 4
    again, _, seconds = compute_logprobs(model, dev, tmp_path / "cache", limit=4)
    assert seconds == 0.0 and all(np.array_equal(a, b) for a, b in zip(first, again))  # served from the cache
    ckpt = torch.load(model, weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][name] = ckpt["state_dict"][name] * 1.5
    other = tmp_path / "model.pt"
    torch.save(ckpt, other)
    changed, _, seconds = compute_logprobs(other, dev, tmp_path / "cache", limit=4)
    assert seconds > 0 and len(changed) == 4  # recomputed, not the first checkpoint's arrays
    assert not all(np.array_equal(a, b) for a, b in zip(first, changed))
    assert len(list((tmp_path / "cache").glob("logprobs-*.npz"))) == 2

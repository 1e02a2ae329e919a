"""Beyond one machine, on one machine: the tiny pipeline through Snakemake's generic cluster
executor (profiles/local-cluster) logging to a `make mlflow-server` tracking server; its
outputs pushed to the repo's default DVC remote and pulled into a fresh clone that then has
nothing to recompute; two experiments queued with `dvc exp run --queue` and run by
`dvc queue start`; the Slurm profile's dry run. Its model is the seeds' Jasper (a tiny one)
with SentencePiece BPE units, so a family and units other than the defaults go through every
stage, registry and `asrflow transcribe` included."""

from __future__ import annotations

import json
import time

import pytest
from mlflow.tracking import MlflowClient

from asrflow.pipeline import definition as P
from conftest import REPO, copy_repo, run, tiny_params
from mlflow_browser import free_port, serving
from sizes import TINY_FAMILIES

STAGES = {s.name for s in P.STAGES}


@pytest.fixture(scope="module")
def server_repo(tmp_path_factory):
    """A repo copy with `make mlflow-server` running in it on a free 127.0.0.1 port."""
    p = tiny_params()
    p["model"].update(family="jasper", jasper=TINY_FAMILIES["jasper"])
    p["vocab"].update(units="bpe", bpe_size=64)
    repo = copy_repo(tmp_path_factory.mktemp("team") / "repo", p)
    port = free_port()
    with serving(["make", "-s", "mlflow-server", f"MLFLOW_PORT={port}"], repo, port, timeout_s=120) as uri:
        yield repo, uri


@pytest.fixture(scope="module")
def cluster_run(server_repo):
    repo, uri = server_repo
    env = {"MLFLOW_TRACKING_URI": uri, "ASRFLOW_INVOCATION": ""}
    out = run(["snakemake", "--profile", "profiles/local-cluster", "reports/synth_wer.md"], cwd=repo, env=env,
              timeout=900)
    return repo, uri, out


def test_tiny_pipeline_through_the_generic_cluster_executor(cluster_run):
    repo, _, out = cluster_run
    assert (repo / "reports/synth_wer.md").exists()
    submitted = (repo / ".snakemake/local-cluster/submitted.txt").read_text().splitlines()
    jobs = {line.split("--job-name=")[1].split()[0]: line for line in submitted}
    assert set(jobs) == STAGES and len(submitted) == len(STAGES), submitted  # every stage a job, once
    # each job's request is the stage's entry of params.yaml's cluster block over its default
    cluster = tiny_params()["cluster"]
    for name, line in jobs.items():
        want = {**cluster["default"], **cluster.get(name, {})}
        assert f"--runtime={want['runtime']} --mem-mb={want['mem_mb']} --cpus={want['cpus']}" in line, line


def test_every_stage_logged_to_the_tracking_server(cluster_run):
    repo, uri, _ = cluster_run
    assert json.loads((repo / "lineage/synth/train.json").read_text())["model_family"] == "jasper"
    tokens = (repo / "data/synth/vocab.txt").read_text().splitlines()
    assert len(tokens) == 2 + 63 and any(t.startswith("\u2581") for t in tokens)  # pieces, not characters
    lexicon = (repo / "data/synth/lm/lexicon.txt").read_text().splitlines()
    assert all(line.split("\t")[1].startswith("\u2581") for line in lexicon if not line.startswith("<"))
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("asrflow-synth")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=100) if "asrflow.stage" in r.data.tags]
    assert {r.info.run_name for r in runs} == STAGES and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["asrflow_invocation"] for r in runs}) == 1  # one pipeline run across the jobs
    ev = next(r for r in runs if r.info.run_name == "evaluate")
    assert ev.data.metrics["test_beam_wer"] == json.loads((repo / "metrics/synth/evaluate.json").read_text())[
        "test"]["beam_wer"]
    # the server's store and artifacts live inside the repo; artifacts went through the server
    assert (repo / "mlruns/server.db").stat().st_size > 0
    assert {a.path for a in client.list_artifacts(ev.info.run_id)} >= {"test_recogs.tsv"}
    assert list((repo / "mlruns/server-artifacts").rglob("test_recogs.tsv"))
    assert not (repo / "mlruns/mlflow.db").exists()  # MLFLOW_TRACKING_URI won over params.yaml's store


def test_the_registered_jasper_model_transcribes_like_evaluate(cluster_run):
    """The registry on the tracking server hands on the Jasper model (BPE units): `asrflow
    transcribe` by its URI gives the evaluate stage's beam+LM hypotheses."""
    import pandas as pd

    repo, uri, _ = cluster_run
    reg = json.loads((repo / "lineage/synth/register.json").read_text())
    recogs = pd.read_csv(repo / "results/synth/evaluate/test_recogs.tsv", sep="\t", keep_default_na=False)[:3]
    rows = pd.read_parquet(repo / "data/synth/manifests/test.parquet", columns=["utt_id", "audio_filepath"])
    paths = [dict(zip(rows["utt_id"], rows["audio_filepath"]))[u] for u in recogs["utt_id"]]
    out = run([str(repo / ".venv/bin/asrflow"), "transcribe", "--model", reg["model_uri"], *paths], cwd=repo,
              env={"MLFLOW_TRACKING_URI": uri}).stdout.splitlines()
    assert out == [f"{p}\t{h}" for p, h in zip(paths, recogs["beam"])], out


def test_dvc_push_then_pull_in_a_fresh_clone_recomputes_nothing(cluster_run):
    repo, _, _ = cluster_run
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(git + ["add", "dvc.lock", "metrics", "plots", "lineage"], cwd=repo)
    run(git + ["commit", "-qm", "run"], cwd=repo)
    pushed = run(["dvc", "push"], cwd=repo).stdout
    remote = repo.parent / "asrflow-dvc-remote"  # the default remote: beside the clone
    assert remote.is_dir() and any(remote.rglob("*")), pushed
    clone = repo.parent / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], cwd=repo.parent)
    run(["dvc", "pull"], cwd=clone)
    for out in ("models/synth/model.pt", "data/synth/lm/lm.bin", "data/synth/manifests/train.parquet",
                "results/synth/evaluate/test_recogs.tsv", "reports/synth_wer.md", "models/synth_mlflow/MLmodel"):
        assert (clone / out).read_bytes() == (repo / out).read_bytes(), out
    assert "up to date" in run(["dvc", "status"], cwd=clone).stdout
    repro = run(["dvc", "repro"], cwd=clone, env={"MLFLOW_TRACKING_URI": "sqlite:////proc/none"}).stdout
    assert "Running stage" not in repro, repro  # nothing recomputed (and no stage even reached MLflow)


def test_queued_experiments_run_and_show_their_wer(cluster_run):
    repo, uri, _ = cluster_run
    env = {"MLFLOW_TRACKING_URI": uri}
    for lr in ("0.002", "0.004"):  # neither the default (an unchanged experiment)
        run(["dvc", "exp", "run", "--queue", "-S", f"train.lr={lr}", "-n", f"lr-{lr}"], cwd=repo, env=env)
    run(["dvc", "queue", "start", "-j", "1"], cwd=repo, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], cwd=repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert status.count("Success") == 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], cwd=repo).stdout)
    exps = {e["name"]: e for rev in shown for e in (rev.get("experiments") or []) for e in e.get("revs", [])}
    assert {"lr-0.002", "lr-0.004"} <= set(exps), list(exps)
    for name in ("lr-0.002", "lr-0.004"):
        data = exps[name]["data"]
        lr = data["params"]["params.yaml"]["data"]["train"]["lr"]
        wer = data["metrics"]["metrics/synth/evaluate.json"]["data"]["test"]["beam_wer"]
        assert lr == float(name[3:]) and 0 <= wer <= 100


def test_slurm_profile_dry_runs_the_librispeech_chain():
    out = run(["snakemake", "--profile", "profiles/slurm", "-n", "reports/librispeech_wer.md"], cwd=REPO)
    log = out.stdout + out.stderr
    assert "This was a dry-run" in log and not any(w in log for w in ("Error", "WARNING", "Warning"))
    assert f"total {len(STAGES)}" in " ".join(log.split())
    train = log.split("rule train:")[1].split("Shell command")[0]
    assert "slurm_partition=gpu" in train and "nodes=1" in train and "runtime=4320" in train

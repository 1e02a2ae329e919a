"""A real cluster: the tiny pipeline through `snakemake --profile profiles/slurm` on a one-node
Slurm cluster (slurmctld, slurmd, munge: tests/cluster.py starts them), every stage an sbatch
job, logging to `make mlflow-server` backed by a real PostgreSQL; then a job waiting on a
drained node, the training job cancelled mid-epoch and a job past its time limit (run beside the
other two, since it mostly waits). The jobs' timings are kept in
test-artifacts/slurm-jobs.json (docs/SCALING.md quotes them)."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import time
from datetime import datetime

import pytest
from mlflow.tracking import MlflowClient

from asrflow.pipeline import definition as P
from cluster import jobs, postgres_server, slurm_cluster
from conftest import copy_repo, edit_params, run, stage_figures, tiny_params
from mlflow_browser import artifacts_dir, free_port, serving

STAGES = {s.name for s in P.STAGES}
# what each job asks Slurm for: the tiny run fits this 2-core machine (params.yaml's own
# `cluster:` block asks for a real cluster's cores, memory and a `gpu` partition)
# (training asks for 1 core, so the over-time-limit job and the cancelled one run side by side)
CLUSTER = {"default": {"partition": "", "runtime": 20, "mem_mb": 1500, "cpus": 1},
           "manifest": {"cpus": 2}, "train": {"mem_mb": 3000, "runtime": 30},
           "tune": {"cpus": 2}, "evaluate": {"mem_mb": 2500}}


# How the executor asks about its jobs here: `squeue` (this cluster has no accounting database,
# so `sacct` answers nothing; finished jobs stay in squeue for MinJobAge), the first check
# after 2 s, not 40, since jobs here take seconds (it still backs off by 10 s a round while
# none finishes, as on a real cluster: checks 2, 14, 36 s after a job starts, which catches this
# run's 8-13 s jobs at 14 s; from 1 s, the 12 s check missed the 12-13 s ones until 33 s);
# outputs are on a local file system; the jobs' logs kept.
FAST_STATUS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
               "--seconds-between-status-checks", "1", "--latency-wait", "5", "--slurm-keep-successful-logs"]


def cluster_params() -> dict:
    p = tiny_params()
    p["cluster"] = CLUSTER
    p["train"]["device"] = "cpu"  # `auto` asks Slurm for the GPUs training would use; this node has none
    p["train"]["checkpoint_every_steps"] = 2  # a checkpoint inside the epoch, to resume from after a scancel
    return p


@pytest.fixture(scope="module")
def postgres_tracking(tmp_path_factory):
    """`make mlflow-server` with its store in a real PostgreSQL on 127.0.0.1."""
    repo = copy_repo(tmp_path_factory.mktemp("slurm") / "repo", cluster_params())
    with postgres_server() as backend:
        port = free_port()
        with serving(["make", "-s", "mlflow-server", f"MLFLOW_PORT={port}", f"MLFLOW_BACKEND={backend}"], repo, port,
                     timeout_s=180) as uri:
            yield repo, uri, backend


@pytest.fixture(scope="module")
def slurm_run(postgres_tracking, tmp_path_factory):
    repo, uri, backend = postgres_tracking
    with slurm_cluster(tmp_path_factory.mktemp("slurmd")) as slurm:
        env = {**slurm, "MLFLOW_TRACKING_URI": uri, "ASRFLOW_INVOCATION": ""}
        out = run(["snakemake", "--profile", "profiles/slurm", *FAST_STATUS, "reports/synth_wer.md"], cwd=repo,
                  env=env, timeout=1200)
        yield repo, uri, backend, slurm, out, jobs(slurm)


@pytest.fixture(scope="module")
def over_time_limit(slurm_run, tmp_path_factory):
    """Training given a 1-minute limit and 400 epochs, in a copy of the run's repo, started in
    the background once its job runs: Slurm stops it at 60-90 s, and Snakemake, whose status
    checks back off while no job finishes, notices and exits ~2.5 min after starting. The job
    asks for 1 of the node's 2 cores, so the drained-node and cancel tests run meanwhile."""
    repo, uri, _, slurm, _, _ = slurm_run
    copy = tmp_path_factory.mktemp("timelimit") / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    edit_params(copy, lambda p: (p["cluster"]["train"].update(runtime=1), p["train"].update(epochs=400)))
    env = {**os.environ, **slurm, "MLFLOW_TRACKING_URI": uri, "ASRFLOW_INVOCATION": ""}
    log = copy.parent / "snakemake.log"
    known = {j["JobId"] for j in jobs(slurm)}
    with open(log, "w") as out:
        proc = subprocess.Popen(["snakemake", "models/synth", "--profile", "profiles/slurm", *FAST_STATUS,
                                 "--retries", "0"], cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        job, deadline = None, time.monotonic() + 120
        while job is None and proc.poll() is None and time.monotonic() < deadline:
            job = next((j["JobId"] for j in jobs(slurm) if j["JobId"] not in known and j["JobState"] == "RUNNING"), None)
            time.sleep(0.2)
        assert job is not None, "the training job did not start:\n" + log.read_text()[-3000:]
        yield proc, log, job
    finally:
        if proc.poll() is None:
            proc.kill()


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def test_every_stage_is_a_slurm_job_asking_for_its_cluster_entry(slurm_run):
    repo, _, _, _, out, slurm_jobs = slurm_run
    assert (repo / "reports/synth_wer.md").exists(), out.stderr[-3000:]
    assert "up to date" in run(["dvc", "status"], cwd=repo).stdout  # the Snakefile committed the run
    by_rule = {}
    for job in slurm_jobs:
        rule = re.match(r"rule_(\w+?)_wildcards", job["Comment"]).group(1)
        assert rule not in by_rule, f"{rule} ran twice"
        by_rule[rule] = job
    assert set(by_rule) == STAGES
    timings = {}
    for rule, job in by_rule.items():
        want = {**CLUSTER["default"], **CLUSTER.get(rule, {})}
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["TimeLimit"] == f"00:{want['runtime']:02d}:00", job
        assert job["NumCPUs"] == str(want["cpus"]) and job["MinMemoryNode"] == f"{want['mem_mb']}M", job
        timings[rule] = {"job_id": int(job["JobId"]), "submit_to_start_s": _seconds(job["SubmitTime"], job["StartTime"]),
                         "run_s": _seconds(job["StartTime"], job["EndTime"])}
    wall = {s: json.loads((repo / f"lineage/synth/{s}.json").read_text())["stage_seconds"] for s in STAGES}
    for rule in timings:  # the job's time less the stage's own: what running it as a job costs
        timings[rule]["stage_s"] = wall[rule]
        timings[rule]["job_overhead_s"] = round(timings[rule]["run_s"] - wall[rule], 1)
    out_dir = artifacts_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "slurm-jobs.json").write_text(json.dumps(
        {"slurm": subprocess.run(["sinfo", "-V"], capture_output=True, text=True).stdout.strip(),
         "cores": os.cpu_count(), "jobs": dict(sorted(timings.items(), key=lambda kv: kv[1]["job_id"]))}, indent=1))


def test_training_takes_its_shape_from_the_allocation(slurm_run):
    """The launcher reads the allocation's SLURM_* values (one node here), not params.yaml's."""
    repo = slurm_run[0]
    logs = list((repo / ".snakemake/slurm_logs/rule_train").rglob("*.log"))
    assert len(logs) == 1, logs
    text = logs[0].read_text()
    assert "[launch] from the Slurm allocation: train.nnodes=1" in text, text[-3000:]
    assert "torchrun --nnodes=1 --nproc-per-node=1" in text, text[-3000:]


def test_the_runs_and_the_model_are_in_postgresql(slurm_run):
    repo, uri, backend, *_ = slurm_run
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("asrflow-synth")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    stage_runs = [r for r in runs if "asrflow.stage" in r.data.tags]
    assert {r.info.run_name for r in stage_runs} == STAGES and all(r.info.status == "FINISHED" for r in stage_runs)
    parents = {r.data.tags[P_TAG] for r in runs if P_TAG in r.data.tags}
    assert len(parents) == 1
    version = json.loads((repo / "lineage/synth/register.json").read_text())["model_version"]
    assert client.get_model_version("asrflow-synth", str(version)).status == "READY"
    # the rows are in PostgreSQL itself (not a SQLite file beside the server)
    count = subprocess.run(["psql", backend, "-tAc", "SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'"],
                           capture_output=True, text=True, check=True).stdout
    assert int(count) == len(runs)
    assert not (repo / "mlruns/server.db").exists() and not (repo / "mlruns/mlflow.db").exists()


P_TAG = "asrflow.invocation"


def _log_stage(args: tuple[str, str, int, str]) -> str:
    uri, invocation, i, params_file = args
    os.environ.update({"MLFLOW_TRACKING_URI": uri, "ASRFLOW_INVOCATION": invocation})
    from asrflow.pipeline.tracking import StageRun

    run_ = StageRun(f"stage{i}", "parallel", {"tracking_uri": uri, "artifact_root": "unused"}, params_file)
    run_.log_params({"shared": {"seed": 7, "lr": 0.002}, f"stage{i}": {"index": i}})  # as stages read params.yaml
    run_.log_metrics({"figure": float(i)})
    for step in range(200):
        run_.log_metrics({"curve": step * 0.5 + i}, step=step)
    run_.log_headline({f"figure_{i}": float(i)})
    return run_.flush()


def test_eight_stages_logging_at_once_lose_nothing(postgres_tracking, tmp_path):
    """Eight stage runs of one invocation flushed at the same moment to the PostgreSQL-backed
    server: every run, param and metric point is there, nested under the invocation's one
    parent run."""
    _, uri, _ = postgres_tracking
    invocation = "snakemake-8parallel0001"
    params_file = str(tmp_path / "params.yaml")  # the project the stages share (its cache/ holds the lock)
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        ids = pool.map(_log_stage, [(uri, invocation, i, params_file) for i in range(8)])
    client = MlflowClient(tracking_uri=uri)
    assert len(set(ids)) == 8
    for i, run_id in enumerate(ids):
        r = client.get_run(run_id)
        assert r.info.status == "FINISHED" and r.data.params[f"stage{i}.index"] == str(i) and r.data.metrics["figure"] == i
        assert len(client.get_metric_history(run_id, "curve")) == 200
    exp = client.get_experiment_by_name("asrflow-parallel")
    parents = client.search_runs([exp.experiment_id], f"tags.`{P_TAG}` = '{invocation}'", run_view_type=3)
    assert len(parents) == 1 and parents[0].info.lifecycle_stage == "active", [p.info for p in parents]
    assert {client.get_run(i).data.tags["mlflow.parentRunId"] for i in ids} == {parents[0].info.run_id}
    logged = parents[0].data.params
    assert logged == {"shared.seed": "7", "shared.lr": "0.002", **{f"stage{i}.index": str(i) for i in range(8)}}
    assert not [t for p in parents for t in p.data.tags if t.startswith("asrflow.params_differ")]


def test_a_job_waits_while_its_node_is_drained_and_runs_once_it_is_resumed(slurm_run, over_time_limit, tmp_path):
    """The only node drained (`scontrol update state=drain`, as an admin does for maintenance)
    before the report job is submitted: the job pends, Snakemake keeps waiting instead of
    failing it, and once the node is resumed the job runs and the run ends clean. (The
    over-time-limit training job keeps running on the drained node, as running jobs do.)"""
    repo, uri, _, slurm, _, _ = slurm_run
    node = socket.gethostname()
    env = {**os.environ, **slurm, "MLFLOW_TRACKING_URI": uri, "ASRFLOW_INVOCATION": ""}
    scontrol = ["scontrol", "update", f"nodename={node}"]
    subprocess.run([*scontrol, "state=drain", "reason=asrflow test: maintenance"], check=True, env=env)
    log = tmp_path / "snakemake.log"
    known = {j["JobId"] for j in jobs(slurm)}
    drained, proc = True, None
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen(["snakemake", "reports/synth_wer.md", "--profile", "profiles/slurm", *FAST_STATUS,
                                     "--forcerun", "report"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
        waiting, deadline = None, time.monotonic() + 120
        while waiting is None and proc.poll() is None and time.monotonic() < deadline:
            waiting = next((j for j in jobs(slurm) if j["JobId"] not in known), None)
            time.sleep(0.2)
        assert waiting is not None, "no job was submitted:\n" + log.read_text()[-3000:]
        time.sleep(15)  # status checks every second: Snakemake has looked at the pending job many times
        job = next(j for j in jobs(slurm) if j["JobId"] == waiting["JobId"])
        assert job["JobState"] == "PENDING" and job["Reason"] != "None", job
        assert proc.poll() is None, "Snakemake gave up on a job waiting for a drained node:\n" + log.read_text()[-3000:]
        subprocess.run([*scontrol, "state=resume"], check=True, env=env)
        drained = False
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if drained:
            subprocess.run([*scontrol, "state=resume"], env=env)
        if proc is not None and proc.poll() is None:
            proc.kill()
    ran = [j for j in jobs(slurm) if j["JobId"] not in known]
    assert [(j["JobId"], j["JobState"]) for j in ran] == [(waiting["JobId"], "COMPLETED")], ran
    assert "up to date" in run(["dvc", "status"], cwd=repo).stdout
    print(f"pending reason while drained: {job['Reason']}")


def test_a_training_job_cancelled_mid_epoch_is_retried_and_ends_bit_identical(slurm_run, tmp_path):
    """`scancel` of the training job once it has written a checkpoint inside its first epoch:
    the profile's retry submits it again, training resumes from checkpoints/<ds>/last.pt and
    ends with the weights of the uninterrupted run, byte for byte. (Last in this file: it
    leaves a cancelled run in the store.)"""
    repo, uri, _, slurm, _, _ = slurm_run
    reference = (repo / "models/synth/model.pt").read_bytes()
    shutil.rmtree(repo / "checkpoints/synth")
    env = {**os.environ, **slurm, "MLFLOW_TRACKING_URI": uri, "ASRFLOW_INVOCATION": ""}
    log = tmp_path / "snakemake.log"
    with open(log, "w") as out:
        # the target first: --forcerun takes every word after it
        proc = subprocess.Popen(["snakemake", "models/synth", "--profile", "profiles/slurm", *FAST_STATUS,
                                 "--forcerun", "train"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    known = {j["JobId"] for j in jobs(slurm)}  # the jobs of the run and of the tests before this one
    cancelled = None
    deadline = time.monotonic() + 300
    try:
        while cancelled is None and proc.poll() is None and time.monotonic() < deadline:
            running = [j for j in jobs(slurm) if j["JobId"] not in known and j["JobState"] == "RUNNING"]
            if running and (repo / "checkpoints/synth/last.pt").exists():
                cancelled = running[0]["JobId"]
                subprocess.run(["scancel", cancelled], check=True, env=env)
            time.sleep(0.05)
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert cancelled is not None, "the training job ended before it could be cancelled:\n" + log.read_text()[-3000:]
    train_jobs = [j for j in jobs(slurm) if j["JobId"] not in known]
    assert [j["JobState"] for j in train_jobs] == ["CANCELLED", "COMPLETED"], train_jobs
    resumed = stage_figures(repo, "train")["resumed_from_step"]
    assert resumed > 0, (repo / "logs/synth/train.log").read_text()[-3000:]
    assert (repo / "models/synth/model.pt").read_bytes() == reference


def test_a_job_past_its_time_limit_names_the_param_to_raise(slurm_run, over_time_limit):
    """Slurm stops the 1-minute training job (:func:`over_time_limit`) at its limit, and the
    run's error names the params.yaml key that sets it."""
    slurm = slurm_run[3]
    proc, log, job = over_time_limit
    assert proc.wait(timeout=600) != 0, log.read_text()[-3000:]
    assert ("asrflow: Slurm stopped the train job at its time limit (1 min): raise cluster.train.runtime in "
            "params.yaml") in log.read_text(), log.read_text()[-3000:]
    assert next(j for j in jobs(slurm) if j["JobId"] == job)["JobState"] == "TIMEOUT"

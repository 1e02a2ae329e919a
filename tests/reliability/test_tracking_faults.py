"""Tracking under faults: 8 stage processes writing one SQLite store at once lose no run; an
unusable MLflow store stops a stage before it computes anything, naming the store; a
tracking server restarted while a stage computes costs nothing."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import TRAIN_ENV, run
from mlflow_browser import free_port, serving
from processes import stopped, tree

FAULTS = Path(__file__).parent / "faults"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("uri, words", [
    (f"http://127.0.0.1:{closed_port()}", ["is unreachable", "MLFLOW_TRACKING_URI"]),
    ("sqlite:////proc/asrflow-no-such-dir/mlflow.db", ["cannot create /proc/asrflow-no-such-dir"]),
], ids=["closed-http-port", "sqlite-in-proc"])  # fixed ids: every pytest-xdist worker collects the same tests
def test_unusable_tracking_store_fails_the_stage_before_any_work(data_repo, uri, words):
    out = data_repo / "runs/vocab-untracked.txt"
    t0 = time.perf_counter()
    proc = run([sys.executable, "stages/vocab.py", "--params", "params.yaml", "--dataset", "synth",
                "--manifests", "data/synth/manifests", "--out", str(out), "--metrics", str(out) + ".json"],
               cwd=data_repo, check=False,
               env={**TRAIN_ENV, "MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "[vocab] error: MLflow" in proc.stderr and uri in proc.stderr, proc.stderr[-2000:]
    assert all(w in proc.stderr for w in words), proc.stderr[-2000:]
    assert not out.exists() and time.perf_counter() - t0 < 30


def test_eight_parallel_stage_processes_lose_no_run(tmp_path):
    """8 processes write to one SQLite store at once: all 8 runs land, none fails with 'locked'."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    code = textwrap.dedent(f"""
        import sys
        from asrflow.pipeline.tracking import StageRun
        r = StageRun(f"stage{{sys.argv[1]}}", "synth", {{"tracking_uri": "{uri}", "artifact_root": "{tmp_path}/art"}})
        r.log_params({{"i": sys.argv[1]}})
        r.log_metrics({{"x": float(sys.argv[1])}})
        r.flush()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stderr=subprocess.PIPE, text=True,
                              env={"ASRFLOW_INVOCATION": "inv-1", "PATH": ""}) for i in range(8)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    assert not any("locked" in e for e in errs)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("asrflow-synth")
    runs = client.search_runs([exp.experiment_id], "tags.asrflow_invocation = 'inv-1'")
    assert sorted(r.info.run_name for r in runs) == [f"stage{i}" for i in range(8)]
    assert sorted(r.data.metrics["x"] for r in runs) == [float(i) for i in range(8)]


def stop_at(match: str) -> dict[str, str]:
    """Environment that freezes (SIGSTOP) a stage at its first open of a path matching ``match``."""
    return {"PYTHONPATH": str(FAULTS),
            "ASRFLOW_FAULT": json.dumps({"event": "open", "match": match, "nth": 1, "action": "stop"})}


def wait_stopped(proc: subprocess.Popen, what: str, timeout_s: float = 120) -> int:
    """The pid of the stopped process in ``proc``'s tree (the stage; launchers exec into it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} ended before reaching the fault point: {proc.communicate()}"
        for pid in tree(proc.pid):
            if stopped(pid):
                return pid
        time.sleep(0.05)
    raise AssertionError(f"{what} never reached the fault point")


def test_mlflow_server_restarted_mid_stage_loses_nothing(data_repo, tmp_path):
    """The tracking server goes down while a stage computes and comes back a few seconds
    later: the stage's final flush retries and records exactly one complete run."""
    port = free_port()
    server = ["mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db", "--artifacts-destination",
              str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    uri = f"http://127.0.0.1:{port}"
    out = data_repo / "runs/vocab-restart.txt"
    with serving(server, tmp_path, port):
        proc = subprocess.Popen([sys.executable, "stages/vocab.py", "--params", "params.yaml", "--dataset", "synth",
                                 "--manifests", "data/synth/manifests", "--out", str(out), "--metrics", f"{out}.json",
                                 "--lineage-file", f"{out}.lineage.json"],
                                cwd=data_repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **TRAIN_ENV, "MLFLOW_TRACKING_URI": uri,
                                     **stop_at(r"vocab-restart\.txt")})
        pid = wait_stopped(proc, "the vocab stage")
    os.kill(pid, signal.SIGCONT)  # the server is down now: the stage finishes and flushes into nothing
    time.sleep(3)
    with serving(server, tmp_path, port):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("asrflow-synth")
        runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_name for r in runs] == ["vocab"] and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["vocab.min_count"] and "stage_seconds" in runs[0].data.metrics
    assert out.exists() and json.loads(Path(f"{out}.lineage.json").read_text())["mlflow_run_id"] == runs[0].info.run_id

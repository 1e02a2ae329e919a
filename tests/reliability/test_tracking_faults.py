"""An unusable MLflow store stops a stage before it computes anything, naming the store."""

import socket
import sys
import time

import pytest

from conftest import TRAIN_ENV, run


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("uri, words", [
    (f"http://127.0.0.1:{closed_port()}", ["is unreachable", "MLFLOW_TRACKING_URI"]),
    ("sqlite:////proc/asrflow-no-such-dir/mlflow.db", ["cannot create /proc/asrflow-no-such-dir"]),
])
def test_unusable_tracking_store_fails_the_stage_before_any_work(data_repo, uri, words):
    out = data_repo / "runs/vocab-untracked.txt"
    t0 = time.perf_counter()
    proc = run([sys.executable, "stages/vocab.py", "--params", "params.yaml", "--dataset", "synth",
                "--manifests", "data/synth/manifests", "--out", str(out)], cwd=data_repo, check=False,
               env={**TRAIN_ENV, "MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "[vocab] error: MLflow" in proc.stderr and uri in proc.stderr, proc.stderr[-2000:]
    assert all(w in proc.stderr for w in words), proc.stderr[-2000:]
    assert not out.exists() and time.perf_counter() - t0 < 30

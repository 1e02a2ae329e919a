"""Faults under the orchestrators: Ctrl-C to `snakemake -j 2` in the middle of training, and a
stage killed after writing part of its outputs, under Snakemake and under `dvc repro`.
Each runs in its own copy of the session's tiny data repo (manifests, stats, vocab built)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from repro import product_digests
from conftest import TRAIN_ENV, data_params, run
from processes import stopped, tree
from test_training_faults import FAULTS, kill_at


def clone(data_repo: Path, dest: Path) -> Path:
    """``data_repo`` as the fixture made it (other tests edit its train params)."""
    shutil.copytree(data_repo, dest, symlinks=True, ignore=shutil.ignore_patterns("runs"))
    (dest / "params.yaml").write_text(yaml.safe_dump(data_params(), sort_keys=False))
    return dest


def digests(repo: Path, under: str) -> dict[str, str]:
    return {k: v for k, v in product_digests(repo).items() if k.startswith(under)}


TARGETS = ["models/synth", "data/synth/lm"]  # train and lm run side by side under -j 2


def test_ctrl_c_to_snakemake_mid_training_then_rerun_gives_a_clean_runs_outputs(data_repo, tmp_path):
    clean, hit = clone(data_repo, tmp_path / "clean"), clone(data_repo, tmp_path / "interrupted")
    run(["snakemake", "-j", "2", *TARGETS], cwd=clean, env=TRAIN_ENV)
    # Ctrl-C: SIGINT to snakemake's whole process group once training has checkpointed mid-epoch
    proc = subprocess.Popen(["snakemake", "-j", "2", *TARGETS], cwd=hit, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **TRAIN_ENV})
    last = hit / "checkpoints/synth/last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert last.exists() and proc.poll() is None, "training finished or failed before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out[-3000:]
    assert not (hit / "models/synth/model.pt").exists(), out[-3000:]  # nothing half-done where the model goes
    rerun = run(["snakemake", "-j", "2", *TARGETS], cwd=hit, env=TRAIN_ENV)
    assert "resuming from checkpoints/synth/last.pt" in rerun.stdout + rerun.stderr
    for under in ("models/synth", "data/synth/lm"):
        assert digests(hit, under) == digests(clean, under) != {}, under
    assert not list(hit.glob("**/.*.partial-*")), "partial output directories left behind"


def killed_manifest(repo: Path, cmd: list[str]) -> subprocess.CompletedProcess:
    """Run ``cmd`` with the manifest stage killed (-9) as it opens its third split's JSON lines file:
    the train and dev manifests are written by then."""
    for out in ("data/synth/manifests", "data/synth/stats.json", "data/synth/vocab.txt"):
        p = repo / out
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(repo / ".dvc/cache")  # or DVC would check the outputs out of its cache instead of running
    return run(cmd, cwd=repo, check=False,
               env={**TRAIN_ENV, **kill_at("open", r"manifests\.partial-\d+/\.test\.jsonl\.tmp$", 1)})


@pytest.mark.parametrize("tool", ["snakemake", "dvc"])
def test_stage_killed_after_writing_part_of_its_outputs(data_repo, tmp_path, tool):
    repo = clone(data_repo, tmp_path / tool)
    expected = digests(repo, "data/synth/manifests")
    cmd = {"snakemake": ["snakemake", "-j", "2", "data/synth/stats.json", "data/synth/vocab.txt"],
           "dvc": ["dvc", "repro", "stats", "vocab"]}[tool]
    proc = killed_manifest(repo, cmd)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    # killed, so it cleaned nothing itself: its partial directory is hidden, the final path is absent
    partial = list((repo / "data/synth").glob(".manifests.partial-*"))
    assert len(partial) == 1 and {p.name for p in partial[0].iterdir()} >= {"train.parquet", "dev.parquet"}, log[-3000:]
    assert not (repo / "data/synth/manifests").exists()
    assert not (repo / "data/synth/stats.json").exists() and not (repo / "data/synth/vocab.txt").exists()
    assert not re.search(r"\[(stats|vocab)\] done", log)  # downstream never ran
    if tool == "dvc":
        status = run(["dvc", "status", "--json"], cwd=repo).stdout
        assert "manifest" in json.loads(status), status  # DVC knows the stage is not done
    run(cmd, cwd=repo, env=TRAIN_ENV)  # the same command again completes...
    assert not list((repo / "data/synth").glob(".manifests.partial-*"))  # ...removing the leftover
    assert digests(repo, "data/synth/manifests") == expected


def test_two_snakemake_runs_on_one_repo_at_once(data_repo, tmp_path):
    """A second `snakemake` started while the first is inside a stage refuses (the working
    directory is locked) and touches nothing; the first then completes with a clean run's LM."""
    clean, busy = clone(data_repo, tmp_path / "clean"), clone(data_repo, tmp_path / "busy")
    run(["snakemake", "-j", "1", "data/synth/lm"], cwd=clean, env=TRAIN_ENV)
    hold = {"PYTHONPATH": str(FAULTS),  # the lm stage freezes at its first write into its partial directory
            "ASRFLOW_FAULT": json.dumps({"event": "open", "match": r"data/synth/\.lm\.partial", "nth": 1,
                                         "action": "stop"})}
    first = subprocess.Popen(["snakemake", "-j", "1", "data/synth/lm"], cwd=busy, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env={**os.environ, **TRAIN_ENV, **hold})
    deadline = time.monotonic() + 120
    while not (stage := next((p for p in tree(first.pid) if stopped(p)), None)):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
        time.sleep(0.05)
    try:
        second = run(["snakemake", "-j", "1", "data/synth/lm"], cwd=busy, env=TRAIN_ENV, check=False, timeout=120)
        assert second.returncode != 0 and "cannot be locked" in second.stdout + second.stderr, second.stdout[-2000:]
        assert not (busy / "data/synth/lm").exists()
    finally:
        os.kill(stage, signal.SIGCONT)
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out[-3000:]
    assert digests(busy, "data/synth/lm") == digests(clean, "data/synth/lm") != {}
    assert not list(busy.glob("data/synth/.*.partial-*"))

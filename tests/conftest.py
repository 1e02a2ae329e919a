"""Shared fixtures: the repo's tools on PATH, a tiny pipeline config, throwaway repo copies."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from repro import copy_project
from sizes import TINY_MODEL

REPO = Path(__file__).resolve().parents[1]

# The stage commands call `python`, `torchrun`, `snakemake`, `dvc`, `lmplz`: the venv's and
# KenLM's (built by `make install`), whatever shell pytest was started from.
os.environ["PATH"] = os.pathsep.join([str(REPO / ".venv" / "bin"), str(REPO / ".tools" / "kenlm" / "bin"),
                                      os.environ.get("PATH", "")])


# The processes the tests start (stages, Snakemake, DVC, servers: hundreds of them) cache the
# bytecode of what they import, as Python does by default; an environment that turns that off
# (PYTHONDONTWRITEBYTECODE, set on the machines here) makes every one of them compile
# torch, MLflow and pandas again: importing the three took 5.0 s uncompiled, 3.8 s compiled.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# pytest-xdist's workers share the cores, so each gets its share of torch's (OpenMP) threads, and
# so does every process its tests start (stages, servers, Slurm jobs: OMP_NUM_THREADS; the train
# stage: train.threads of tiny_params). Two workers each running torch on every core spin-wait on
# each other at parallel ops. On an Intel Xeon (2 cores, commit 65eff4a, uncapped) the learning
# test's tiny training went from 0.05 s a step alone to 4-12 s a step beside the other worker,
# which put the suite past its time limit; on an AMD EPYC uncapped it ran in time (the cap was
# dropped at 6b822d3), and the demo page's training took 336 s beside another worker instead of
# 33 s alone (commit 6efaa4d).
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def config(cls, block: str, **overrides):
    """``cls.from_params`` of params.yaml's ``block`` with ``overrides``: the library's config
    types have no defaults of their own, so tests start from params.yaml too."""
    return cls.from_params({**copy.deepcopy(PARAMS[block]), **overrides})


def model_config(n_mels: int, vocab_size: int, **fields):
    """A DeepSpeech2 ModelConfig from params.yaml's model.deepspeech2 block, with ``fields``
    (ModelConfig's names: conv_kernel and conv_strides are the block's subsampling) overriding."""
    from asrflow.models.deepspeech2 import ModelConfig

    block = copy.deepcopy(PARAMS["model"]["deepspeech2"])
    sub = {"conv_kernel": "kernel", "conv_strides": "strides"}
    for k, v in fields.items():
        (block["subsampling"] if k in sub else block)[sub.get(k, k)] = v
    return ModelConfig.from_params(block, n_mels, vocab_size)


def tiny_params() -> dict:
    """params.yaml shrunk so the whole chain runs in well under a minute on 2 cores."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    s = p["datasets"]["synth"]
    s.update(voices=["en-us", "en-gb"], variants=["m1", "f1", "m3", "f3"], dev_speakers=1, test_speakers=1,
             utterances={"train": 48, "dev": 10, "test": 10}, lm_sentences=400)
    p["stats"]["sample_size"] = 16
    p["train"].update(epochs=2, batch_frames=3000, warmup_steps=4, threads=THREADS)
    p["train_per_dataset"] = {name: {} for name in p["datasets"]}  # the tiny training, whatever a dataset's own
    p["train_per_family"] = {name: {} for name in p["train_per_family"]}  # or a family's
    p["model"]["deepspeech2"].update(TINY_MODEL)
    p["tune"].update(alpha_count=3, beta_count=2, beside_counts=[3, 1], max_utterances=0)
    p["decode"]["beam_size"] = 8
    return p


@pytest.fixture
def params() -> dict:
    return copy.deepcopy(tiny_params())


def copy_repo(dest: Path, params: dict | None = None) -> Path:
    """A throwaway copy of the project at ``dest``; ``params`` replaces params.yaml."""
    copy_project(REPO, dest)
    if params is not None:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "params"],
                       cwd=dest, check=True)
    return dest


def run(cmd: list[str], cwd: Path, timeout: int = 600, check: bool = True, env: dict | None = None):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


TRAIN_ENV = {"ASRFLOW_INVOCATION": "", "MLFLOW_TRACKING_URI": ""}


def data_params() -> dict:
    """params.yaml of :func:`data_repo` as the fixture made it (tests edit its train block)."""
    p = tiny_params()
    p["train"].update(epochs=2, checkpoint_every_steps=2)
    return p


@pytest.fixture(scope="session")
def data_repo(tmp_path_factory):
    """A repo copy holding the tiny corpus' manifests, stats and vocab (download..vocab run once),
    for tests that run the train stage's command themselves."""
    repo = copy_repo(tmp_path_factory.mktemp("train-data"), data_params())
    run(["snakemake", "-j", "2", "data/synth/stats.json", "data/synth/vocab.txt"], cwd=repo, env=TRAIN_ENV)
    return repo


def edit_params(repo: Path, change) -> None:
    """Apply ``change`` (a function of the params mapping) to ``repo``'s params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    change(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage_figures(repo: Path, stage: str, dataset: str = "synth") -> dict:
    """Everything a stage's run reported: its DVC metrics file (the figures runs are compared
    by) merged with its lineage record (the other figures, ids, timings, names), as the
    report reads them."""
    import json

    def merged(a: dict, b: dict) -> dict:
        return {**b, **{k: merged(v, b[k]) if isinstance(v, dict) and isinstance(b.get(k), dict) else v
                        for k, v in a.items()}}

    metrics = repo / f"metrics/{dataset}/{stage}.json"
    return merged(json.loads(metrics.read_text()) if metrics.exists() else {},
                  json.loads((repo / f"lineage/{dataset}/{stage}.json").read_text()))


def set_train(repo: Path, **train) -> None:
    """Update the ``train`` block of ``repo``'s params.yaml."""
    edit_params(repo, lambda p: p["train"].update(train))


def train_cmd(repo: Path, name: str, launcher: list[str] | None = None) -> list[str]:
    """The train stage's command writing under runs/<name>/ (one process unless ``launcher``)."""
    d = f"runs/{name}"
    return [*(launcher or [sys.executable]), "stages/train.py", "--params", "params.yaml", "--dataset", "synth",
            "--manifests", "data/synth/manifests", "--stats", "data/synth/stats.json", "--vocab", "data/synth/vocab.txt",
            "--out", f"{d}/model", "--checkpoints", f"{d}/checkpoints", "--metrics", f"{d}/train.json",
            "--plots", f"{d}/curve.csv"]


def kill9_mid_epoch_and_resume(repo: Path, whole: str, killed: str) -> Path:
    """Train ``runs/<whole>`` uninterrupted; train ``runs/<killed>`` the same way but SIGKILL it
    right after a mid-epoch checkpoint of epoch 2 lands, then run the same command again:
    it must resume and end with bit-identical weights (asserted). Returns ``runs/<killed>``."""
    import signal

    import torch

    env = {"ASRFLOW_INVOCATION": "", "MLFLOW_TRACKING_URI": ""}
    run(train_cmd(repo, whole), cwd=repo, env=env)
    proc = subprocess.Popen(train_cmd(repo, killed), cwd=repo, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "checkpoint step=" in line and "epoch=2" in line and "batch=0" not in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    out_dir = repo / "runs" / killed
    assert not (out_dir / "model/model.pt").exists() and (out_dir / "checkpoints/last.pt").exists()
    out = run(train_cmd(repo, killed), cwd=repo, env=env).stderr
    assert f"resuming from runs/{killed}/checkpoints/last.pt" in out, out
    weights = lambda p: torch.load(p, map_location="cpu", weights_only=True)["state_dict"]  # noqa: E731
    a, b = weights(repo / "runs" / whole / "model/model.pt"), weights(out_dir / "model/model.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    return out_dir

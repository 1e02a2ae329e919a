"""Training in several processes: two DDP ranks on CPU through torchrun (gloo), the real
launcher; data-loading worker processes."""

import ipaddress
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import yaml

from asrflow.pipeline.definition import stage
from asrflow.pipeline.launch import render
from conftest import TRAIN_ENV, run, set_train, train_cmd
from processes import tree


def loopback(addr: str) -> bool:
    """Whether ``ss``'s local address is a loopback one (``*`` and ``0.0.0.0`` are every interface)."""
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_loopback
    except ValueError:
        return False


def run_watching_listeners(cmd: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``cmd`` and, every 0.2 s until it ends, note the local address of every TCP
    socket its processes listen on (``ss -ltnp``)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **TRAIN_ENV})
    seen: set[str] = set()
    out: dict[str, str] = {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate(timeout=600))))
    reader.start()
    while proc.poll() is None:
        pids = tree(proc.pid)
        for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
            owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
            if owners & pids:
                seen.add(line.split()[3].rsplit(":", 1)[0].strip("[]"))
        time.sleep(0.2)
    reader.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out.get("stdout", ""), out.get("stderr", "")), seen


def test_two_gloo_ranks_see_every_utterance_once_and_end_identical(data_repo):
    """The train stage under the pipeline's own torchrun line; watched with ``ss`` while it
    runs, nothing it starts listens beyond the loopback interface."""
    set_train(data_repo, epochs=2, nproc_per_node=2, checkpoint_every_steps=2, patience=0, lr=0.0015)
    launcher = render(stage("train").launcher, yaml.safe_load((data_repo / "params.yaml").read_text()), "synth")
    assert "--rdzv-backend=asrflow" in launcher
    proc, listening = run_watching_listeners(train_cmd(data_repo, "ddp", launcher), data_repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the agent's two stores and each rank's gloo pairs, all on loopback (torchrun's c10d: *)
    assert listening and all(loopback(a) for a in listening), listening
    out = proc.stderr
    n = sum(1 for _ in open(data_repo / "data/synth/manifests/train.jsonl"))
    for epoch in (1, 2):  # checked by the training itself across ranks (all_gather), raising if not
        assert f"epoch {epoch}: {n} utterances, each seen exactly once across 2 ranks" in out, out
    assert "parameters identical across 2 ranks" in out, out
    assert "world size 2" in out
    metrics = json.loads((data_repo / "runs/ddp/train.json").read_text())
    assert metrics["epochs"] == 2 and (data_repo / "runs/ddp/model/model.pt").exists()


def test_loader_workers_change_nothing_but_speed(data_repo):
    """Loading in 2 worker processes (with augmentation drawing per utterance) trains the same weights."""
    import torch

    augment = [{"type": "speed", "prob": 0.5, "factors": [0.9, 1.1]}, {"type": "specaugment", "prob": 0.5, "freq_masks": 2,
                                                                         "freq_width": 15, "time_masks": 2, "time_width": 40, "time_max_frac": 0.2}]
    for name, workers in (("inline", 0), ("workers", 2)):
        set_train(data_repo, epochs=1, nproc_per_node=1, loader_workers=workers, augment=augment, lr=0.0015)
        run(train_cmd(data_repo, name), cwd=data_repo, env=TRAIN_ENV)
    a, b = (torch.load(data_repo / f"runs/{n}/model/model.pt", weights_only=True)["state_dict"]
            for n in ("inline", "workers"))
    assert all(torch.equal(a[k], b[k]) for k in a)

"""Training under real faults: kill -9 mid-epoch then the same command, non-finite losses,
early stopping and checkpoint retention. The train stage runs as a real process on a tiny
synth corpus built by the pipeline's own stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import torch

from conftest import run, set_train, train_cmd

ENV = {"ASRFLOW_INVOCATION": "", "MLFLOW_TRACKING_URI": ""}


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


AUGMENT = [{"type": "speed", "prob": 0.5, "factors": [0.9, 1.1]}, {"type": "volume", "prob": 0.5, "gain_db": [-6, 6]},
           {"type": "shift", "prob": 0.5, "max_ms": 50}, {"type": "specaugment", "prob": 0.5, "freq_masks": 2,
                                                           "freq_width": 8, "time_masks": 2, "time_width": 20}]


def test_kill9_mid_epoch_then_same_command_ends_with_identical_weights(data_repo):
    """With augmentation on (its randomness is per utterance and epoch), dropout, and a mid-epoch kill."""
    set_train(data_repo, epochs=2, checkpoint_every_steps=2, patience=0, lr=0.0015, augment=AUGMENT)
    run(train_cmd(data_repo, "whole"), cwd=data_repo, env=ENV)
    # the same training, killed with SIGKILL right after a mid-epoch checkpoint lands
    proc = subprocess.Popen(train_cmd(data_repo, "killed"), cwd=data_repo, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ENV})
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "checkpoint step=" in line and "epoch=2" in line and "batch=0" not in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    killed = data_repo / "runs/killed"
    assert not (killed / "model/model.pt").exists() and (killed / "checkpoints/last.pt").exists()
    out = run(train_cmd(data_repo, "killed"), cwd=data_repo, env=ENV).stderr
    assert "resuming from runs/killed/checkpoints/last.pt" in out, out
    whole, resumed = weights(data_repo / "runs/whole/model/model.pt"), weights(killed / "model/model.pt")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), \
        [k for k in whole if not torch.equal(whole[k], resumed[k])]
    metrics = json.loads((killed / "train.json").read_text())
    assert metrics["resumed_from_step"] > 0 and metrics["epochs"] == 2
    curve = lambda name: [l.split(",")[:5] for l in (data_repo / f"runs/{name}/curve.csv").read_text().splitlines()]
    assert curve("whole") == curve("killed")  # epoch, step, train loss, dev CER and WER (not wall time)


def test_checkpoint_of_other_params_is_not_resumed(data_repo):
    set_train(data_repo, epochs=1, checkpoint_every_steps=2, lr=0.0015, augment=[])
    run(train_cmd(data_repo, "changed"), cwd=data_repo, env=ENV)
    set_train(data_repo, epochs=1, checkpoint_every_steps=2, lr=0.003)
    out = run(train_cmd(data_repo, "changed"), cwd=data_repo, env=ENV).stderr
    assert "not resuming" in out and "starting afresh" in out, out
    assert json.loads((data_repo / "runs/changed/train.json").read_text())["resumed_from_step"] == 0


def test_nonfinite_losses_are_skipped_counted_and_stop_training(data_repo, tmp_path):
    """Feature statistics with a zero standard deviation make every input infinite: each step's
    loss is NaN, skipped and counted, and the third in a row stops the stage with a clear error."""
    stats = json.loads((data_repo / "data/synth/stats.json").read_text())
    stats["std"] = [0.0] * len(stats["std"])
    bad = data_repo / "runs/bad-stats.json"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(json.dumps(stats))
    set_train(data_repo, epochs=1, max_nonfinite_in_row=3, lr=0.0015)
    cmd = train_cmd(data_repo, "nan")
    cmd[cmd.index("--stats") + 1] = str(bad)
    proc = run(cmd, cwd=data_repo, env=ENV, check=False)
    assert proc.returncode == 1
    assert "3 non-finite losses in a row (train.max_nonfinite_in_row=3)" in proc.stderr, proc.stderr[-3000:]
    assert "lower train.lr" in proc.stderr and "step skipped (2 so far)" in proc.stderr
    assert not (data_repo / "runs/nan/model/model.pt").exists()


def test_early_stopping_and_checkpoint_retention(data_repo):
    """A learning rate too small to learn anything leaves dev CER wandering (batch-norm statistics
    still move): patience 2 stops the run two epochs after its best, long before epoch 8; one
    epoch checkpoint is kept besides the best, and the model is the best epoch's."""
    set_train(data_repo, epochs=8, lr=1e-12, warmup_steps=0, patience=2, keep_checkpoints=1)
    out = run(train_cmd(data_repo, "early"), cwd=data_repo, env=ENV).stderr
    metrics = json.loads((data_repo / "runs/early/train.json").read_text())
    rows = (data_repo / "runs/early/curve.csv").read_text().splitlines()[1:]
    cer = [float(r.split(",")[3]) for r in rows]
    best = cer.index(min(cer)) + 1
    assert metrics["stopped_early"] is True and metrics["epochs"] == len(cer) == best + 2 < 8, (metrics, cer)
    assert f"early stop after epoch {best + 2}" in out and metrics["best_epoch"] == best
    kept = sorted(p.name for p in (data_repo / "runs/early/checkpoints").glob("epoch-*.pt"))
    assert kept == [f"epoch-{best:03d}.pt", f"epoch-{best + 2:03d}.pt"]
    assert (data_repo / "runs/early/model/model.pt").read_bytes() == \
        (data_repo / f"runs/early/checkpoints/epoch-{best:03d}.pt").read_bytes()

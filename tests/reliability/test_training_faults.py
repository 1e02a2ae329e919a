"""Training under real faults: kill -9 mid-epoch and mid-checkpoint-write then the same
command, a full disk, a crafted pickle checkpoint, non-finite losses, early stopping and
checkpoint retention. The train stage runs as a real process on a tiny
synth corpus built by the pipeline's own stages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch

from conftest import PARAMS, kill9_mid_epoch_and_resume, run, set_train, train_cmd

ENV = {"ASRFLOW_INVOCATION": "", "MLFLOW_TRACKING_URI": ""}


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


AUGMENT = [{"type": "speed", "prob": 0.5, "factors": [0.9, 1.1]}, {"type": "volume", "prob": 0.5, "gain_db": [-6, 6]},
           {"type": "shift", "prob": 0.5, "max_ms": 50}, {"type": "specaugment", "prob": 0.5, "freq_masks": 2,
                                                           "freq_width": 8, "time_masks": 2, "time_width": 20,
                                                           "time_max_frac": 0.2}]


def test_kill9_mid_epoch_then_same_command_ends_with_identical_weights(data_repo):
    """With augmentation on (its randomness is per utterance and epoch), dropout, and a mid-epoch kill."""
    set_train(data_repo, epochs=2, checkpoint_every_steps=2, patience=0, lr=0.0015, augment=AUGMENT)
    killed = kill9_mid_epoch_and_resume(data_repo, "whole", "killed")
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


FAULTS = Path(__file__).parent / "faults"  # sitecustomize.py: kill -9 at an exact audit event
PLAIN = dict(epochs=2, checkpoint_every_steps=2, patience=0, lr=0.0015, warmup_steps=4, augment=[], keep_checkpoints=3,
             max_nonfinite_in_row=5, resume=True)


def kill_at(event: str, match: str, nth: int) -> dict[str, str]:
    return {"PYTHONPATH": str(FAULTS), "ASRFLOW_FAULT": json.dumps({"event": event, "match": match, "nth": nth})}


def test_kill9_while_a_checkpoint_is_written_keeps_the_previous_one(data_repo):
    """SIGKILL between writing the second last.pt and renaming it into place."""
    set_train(data_repo, **PLAIN)
    ckpts = data_repo / "runs/ckpt-kill/checkpoints"
    proc = run(train_cmd(data_repo, "ckpt-kill"), cwd=data_repo, check=False,
               env={**ENV, **kill_at("os.rename", r"\.last\.pt\.\d+\.[0-9a-f]+\.tmp$", 2)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftovers = list(ckpts.glob(".last.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the write was complete, the rename never came
    previous = torch.load(ckpts / "last.pt", map_location="cpu", weights_only=True)  # the first one, whole
    assert previous["state"]["step"] == 2
    assert not (data_repo / "runs/ckpt-kill/model").exists()
    out = run(train_cmd(data_repo, "ckpt-kill"), cwd=data_repo, env=ENV).stderr
    assert "resuming from runs/ckpt-kill/checkpoints/last.pt: step 2" in out, out[-3000:]
    assert not list(ckpts.glob("*.tmp")), "leftover of the killed write not cleaned on restart"
    assert json.loads((data_repo / "runs/ckpt-kill/train.json").read_text())["resumed_from_step"] == 2
    weights(data_repo / "runs/ckpt-kill/model/model.pt")


def in_tmpfs(mount: Path, size: str, cmd: list[str], keep: Path) -> list[str]:
    """``cmd`` run with a ``size`` tmpfs mounted at ``mount`` in a private mount namespace; what
    the tmpfs holds afterwards is copied to ``keep`` (the mount goes away with the namespace)."""
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--mount", "--map-root-user"]
    script = (f'mount -t tmpfs -o size={size} tmpfs "{mount}" && {{ "$@"; rc=$?; cp -a "{mount}/." "{keep}/"; '
              'exit $rc; }')
    return [*unshare, "sh", "-c", script, "sh", *cmd]


def test_disk_full_while_writing_a_checkpoint(data_repo):
    """A 512 KiB tmpfs holds one checkpoint (~330 KB) but not a second beside it."""
    set_train(data_repo, **PLAIN)
    ckpts, keep = data_repo / "runs/full/checkpoints", data_repo / "runs/full-after"
    ckpts.mkdir(parents=True)
    keep.mkdir(parents=True)
    proc = run(in_tmpfs(ckpts, "512k", train_cmd(data_repo, "full"), keep), cwd=data_repo, check=False, env=ENV)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "[train] error: [Errno 28] no space left on the device holding runs/full/checkpoints while writing " \
           "last.pt" in proc.stderr, proc.stderr[-3000:]
    assert "the previous runs/full/checkpoints/last.pt is unchanged" in proc.stderr
    assert sorted(p.name for p in keep.iterdir()) == ["last.pt"]  # no temporary file left behind
    assert torch.load(keep / "last.pt", map_location="cpu", weights_only=True)["state"]["step"] == 2
    assert not (data_repo / "runs/full/model").exists() and not (data_repo / "runs/full/train.json").exists()
    assert not list((data_repo / "runs/full").glob(".model.partial-*"))
    # the stage's inputs, produced before, are untouched
    run(["dvc", "status", "stats", "vocab"], cwd=data_repo)


class Payload:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_crafted_pickle_checkpoint_is_refused_and_nothing_runs(data_repo, tmp_path):
    from asrflow.serve.package import package_model
    from asrflow.serve.settings import DecoderSettings
    from asrflow.models.checkpoint import UnsafeCheckpoint, checkpoint_vocab, load_checkpoint

    set_train(data_repo, **PLAIN)
    crafted = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "vocab": Payload()}, crafted)
    ckpts = data_repo / "runs/pickle/checkpoints"
    ckpts.mkdir(parents=True)
    shutil.copy(crafted, ckpts / "last.pt")
    proc = run(train_cmd(data_repo, "pickle"), cwd=data_repo, check=False, env=ENV)
    assert proc.returncode == 1 and "runs/pickle/checkpoints/last.pt: refused to load" in proc.stderr, proc.stderr[-2000:]
    assert "Nothing in it was run" in proc.stderr
    for load in (load_checkpoint, checkpoint_vocab,
                 lambda p: package_model(tmp_path / "pkg", p, tmp_path, DecoderSettings.from_dict({**PARAMS["decode"], "alpha": 1, "beta": 0}))):
        with pytest.raises(UnsafeCheckpoint, match="refused to load"):
            load(crafted)
    assert not (data_repo / "pwned").exists() and not (tmp_path / "pwned").exists() and not Path("pwned").exists()


NAN_ON_CALLS = (3, 4, 9)
NAN_LOSSES = f"""
import runpy, sys
import torch.nn.functional as F
real, calls = F.ctc_loss, [0]
def ctc_loss(*args, **kwargs):  # the real loss, made NaN on chosen calls (a NaN reaching the gradients too)
    calls[0] += 1
    loss = real(*args, **kwargs)
    return loss * float("nan") if calls[0] in {NAN_ON_CALLS} else loss
F.ctc_loss = ctc_loss
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_nonfinite_losses_on_some_batches_are_skipped_and_training_goes_on(data_repo):
    set_train(data_repo, **{**PLAIN, "max_nonfinite_in_row": 3})
    cmd = train_cmd(data_repo, "some-nan", launcher=[sys.executable, "-c", NAN_LOSSES])
    out = run(cmd, cwd=data_repo, env=ENV).stderr
    metrics = json.loads((data_repo / "runs/some-nan/train.json").read_text())
    assert metrics["nonfinite_steps"] == len(NAN_ON_CALLS) and metrics["epochs"] == 2, metrics
    assert "step skipped (3 so far)" in out
    w = weights(data_repo / "runs/some-nan/model/model.pt")
    assert all(torch.isfinite(t).all() for t in w.values() if t.is_floating_point())

"""The files a training run keeps: ``last.pt`` (everything needed to resume exactly), one
checkpoint per epoch (the last K and the best are kept), and the fingerprint that decides
whether ``last.pt`` belongs to this run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from asrflow.features.logmel import FeatureConfig
from asrflow.train.config import OPERATIONAL, TrainConfig

# The code whose edits change what training computes: a checkpoint written by other code is not resumed.
CODE = ("train/loop.py", "train/batches.py", "train/distributed.py", "models", "features/logmel.py",
        "features/augment.py", "text/vocab.py")


def run_fingerprint(cfg: TrainConfig, model: dict[str, Any], features: FeatureConfig, seed: int,
                    inputs: list[Path]) -> str:
    """What a resumable checkpoint must match to be resumed: the params that shape training
    (``model``: the chosen family and its block, :func:`asrflow.models.families.selected`), the seed, the input files (train/dev
    manifests, stats, vocab) and the training code (the models package entire)."""
    h = hashlib.sha256()
    h.update(json.dumps({"train": {k: v for k, v in cfg.to_params().items() if k not in OPERATIONAL},
                         "model": model,
                         "features": features.__dict__, "seed": seed}, sort_keys=True).encode())
    root = Path(__file__).resolve().parents[1]
    code = [f for c in CODE for f in ([root / c] if (root / c).is_file() else sorted((root / c).glob("*.py")))]
    for f in [*inputs, *code]:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def epoch_checkpoint(checkpoint_dir: Path, epoch: int) -> Path:
    """The per-epoch checkpoint of ``epoch`` (1-based)."""
    return checkpoint_dir / f"epoch-{epoch:03d}.pt"


def prune_epoch_checkpoints(checkpoint_dir: Path, keep: int, best_epoch: int) -> None:
    """Keep the last ``keep`` per-epoch checkpoints and the best one."""
    files = sorted(checkpoint_dir.glob("epoch-*.pt"))
    for f in files[:-keep]:
        if f != epoch_checkpoint(checkpoint_dir, best_epoch):
            f.unlink()


def fresh_state() -> dict[str, Any]:
    """The resumable position of a run that has not started: step, epoch, batch within the
    epoch, losses of the epoch so far, learning curve, best (dev CER, dev WER, epoch), epochs
    since the best, non-finite losses (total, in a row), seconds trained, utterances seen this
    epoch, the per-step log and the audio seconds since it was last written."""
    return {"step": 0, "epoch": 0, "batch": 0, "losses": [], "curve": [], "best": [float("inf"), float("inf"), -1],
            "since_best": 0, "nonfinite": 0, "in_row": 0, "seconds": 0.0, "seen": [], "step_log": [],
            "window_audio": 0.0}

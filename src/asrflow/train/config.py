"""The training run's configuration, typed: built from params.yaml only (no defaults here that
could disagree with it), stored in every checkpoint as the ``train`` block it came from."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml's ``train`` block (field order = params.yaml's key order, so the block a
    checkpoint stores is the one params.yaml holds). The schema has validated every key."""

    # optimisation
    epochs: int
    batch_frames: int
    lr: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    precision: str
    max_nonfinite_in_row: int
    # checkpoints and stopping
    checkpoint_every_steps: int
    resume: bool
    keep_checkpoints: int
    patience: int
    max_minutes: float
    augment: list[dict[str, Any]]
    log_every_steps: int
    # processes and devices
    nproc_per_node: int
    nnodes: int
    rdzv_endpoint: str
    device: str
    threads: int
    loader_workers: int

    @classmethod
    def from_params(cls, train: dict[str, Any]) -> "TrainConfig":
        """From the validated ``train`` block of params.yaml."""
        return cls(**train)

    @classmethod
    def for_dataset(cls, params: dict[str, Any], dataset: str) -> "TrainConfig":
        """How ``dataset`` is trained with the chosen model family: params.yaml's ``train`` block,
        then the keys the family's entry in ``train_per_family`` sets, then those the dataset's
        entry in ``train_per_dataset`` sets (the more specific wins)."""
        family = params["train_per_family"][params["model"]["family"]]
        return cls.from_params({**params["train"], **family, **params["train_per_dataset"][dataset]})

    def to_params(self) -> dict[str, Any]:
        """The block as params.yaml holds it (what checkpoints and the run fingerprint record).

        Its keys are fresh strings, as a YAML load makes them, not the interned field names: a
        checkpoint pickles repeated string objects as references, so keys shared with the model
        config's field names would change the checkpoint's bytes (not its content)."""
        return {f.name.encode().decode(): getattr(self, f.name) for f in fields(self)}


# train params that change how a run is checkpointed, stopped or launched but not the weights it reaches
OPERATIONAL = ("threads", "loader_workers", "max_minutes", "checkpoint_every_steps", "keep_checkpoints", "patience",
               "resume", "log_every_steps", "rdzv_endpoint")


@dataclass(frozen=True)
class TrainPaths:
    """What training reads and writes: manifests, stats and vocabulary in; the model
    (``out_dir/model.pt``), the learning curve CSV and per-epoch checkpoints out."""

    train_manifest: Path
    dev_manifest: Path
    stats: Path
    vocab: Path
    out_dir: Path
    curve: Path
    checkpoint_dir: Path

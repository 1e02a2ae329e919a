"""Checkpoint I/O: saving atomically, loading weights-only, and the model a checkpoint holds.

asrflow's checkpoints are plain dicts of tensors and plain values (the model's config,
weights, vocabulary, feature config and statistics), so they load with
``torch.load(weights_only=True)``: a file whose pickle would import or call anything else is
refused before anything in it runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from asrflow.common.files import atomic_open
from asrflow.features.logmel import FeatureConfig, LogMel
from asrflow.models.families import model_from_checkpoint


class UnsafeCheckpoint(ValueError):
    """A checkpoint file that carries Python objects other than tensors and plain values."""


def model_checkpoint(model: torch.nn.Module, vocab: list[str], mean: torch.Tensor, std: torch.Tensor,
                     features: FeatureConfig, **extra: Any) -> dict[str, Any]:
    """The checkpoint a trained model is shipped as: its config and weights, the vocabulary, the
    feature config and normalisation statistics (all :func:`load_checkpoint` needs), plus
    ``extra`` plain values (the training params, epoch, dev rates)."""
    return {"model_family": model.family, "model_config": model.cfg.to_dict(), "state_dict": model.state_dict(),
            "vocab": vocab, "stats": {"mean": mean.tolist(), "std": std.tolist()}, "features": features.__dict__, **extra}


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` atomically: ``path`` holds the previous file or the new one, whatever
    happens; a full disk is reported as such, naming the directory."""
    with atomic_open(path, "wb", hint="or point the checkpoint directory at a bigger disk") as f:
        torch.save(obj, f)


def load_safely(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: asrflow's checkpoints hold only tensors and
    plain values, so a file whose pickle would import or call anything else is refused
    (and nothing in it runs); a truncated or foreign file gets an error naming it."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((l for l in first if "Unsupported" in l or "GLOBAL" in l), first[0] if first else "")
        raise UnsafeCheckpoint(f"{path}: refused to load: it carries pickled Python objects that are not tensors or "
                               f"plain values ({detail.strip()}); asrflow never writes such files, so it was made "
                               "elsewhere or tampered with. Nothing in it was run.") from None
    except (RuntimeError, EOFError, KeyError) as e:
        raise ValueError(f"{path} is not a readable checkpoint (truncated or not written by torch.save?): {e}") from e


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """Model (eval mode), the checkpoint dict, feature extractor and stats (mean, std).

    Loaded with ``weights_only=True``: a checkpoint carrying a pickled object is refused.
    """
    ckpt = load_safely(path, device)
    model = model_from_checkpoint(ckpt)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    fe = LogMel(FeatureConfig(**ckpt["features"]))
    mean = torch.tensor(ckpt["stats"]["mean"], dtype=torch.float32)
    std = torch.tensor(ckpt["stats"]["std"], dtype=torch.float32)
    return model, ckpt, fe, mean, std


def checkpoint_vocab(path: str | Path) -> list[str]:
    """The vocabulary stored in a checkpoint (loaded with ``weights_only=True``)."""
    return load_safely(path)["vocab"]

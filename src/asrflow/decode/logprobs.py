"""The acoustic model's output: per-utterance CTC log-probs of a manifest, computed once and
kept in a content-addressed cache (the tune and evaluate stages decode them many times)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from asrflow.common.files import atomic_open, sha256_file
from asrflow.data.manifest import ManifestAudio, read_manifest
from asrflow.features.logmel import utterance_features
from asrflow.models.checkpoint import load_checkpoint

#: The modules whose code decides the log-probs (features, model, checkpoint loading, this file):
#: part of the cache key, so an edit to any of them is never served a stale result.
_CODE = ("features/logmel.py", "models/deepspeech2.py", "models/jasper.py", "models/conformer.py",
         "models/families.py", "models/checkpoint.py", "decode/logprobs.py")


def code_digest() -> str:
    """SHA-256 over the source of the modules that compute log-probs."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in _CODE:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    return h.hexdigest()


def cache_key(model_path: str | Path, manifest_path: str | Path, extra: dict[str, Any]) -> str:
    """Content hash of the checkpoint (which embeds vocab and stats), manifest, settings and
    the code that computes log-probs."""
    h = hashlib.sha256()
    h.update(sha256_file(model_path).encode())
    h.update(sha256_file(manifest_path).encode())
    h.update(json.dumps(extra, sort_keys=True).encode())
    h.update(code_digest().encode())
    return h.hexdigest()[:24]


def utterance_logprobs(model: torch.nn.Module, fe, mean: torch.Tensor, std: torch.Tensor,
                       wav: np.ndarray) -> np.ndarray:
    """(frames, vocab) float32 CTC log-probs of one decoded waveform (call under inference mode)."""
    feats = utterance_features(wav, fe, mean, std)
    lp, lens = model(feats.unsqueeze(0), torch.tensor([feats.shape[0]]))
    return lp[0, : int(lens[0])].numpy().astype(np.float32)


class AcousticOutputs(NamedTuple):
    """What :func:`compute_logprobs` returns."""

    logprobs: list[np.ndarray]   # per utterance, (frames, vocab) float32
    rows: pd.DataFrame           # the manifest rows they belong to
    seconds: float               # acoustic-model compute time (as measured when computed, if cached)
    cached: bool                 # served from the cache


def compute_logprobs(model_path: str | Path, manifest_path: str | Path, cache_dir: str | Path | None = None,
                     limit: int = 0, threads: int = 0) -> AcousticOutputs:
    """Run the acoustic model once over a manifest; return per-utterance log-probs.

    With ``cache_dir`` the result is stored under a content hash of checkpoint, manifest,
    ``limit`` and the code that computes it (with the compute time it took, so a real-time
    factor can be reported from a cached result); a cache made from another checkpoint,
    manifest or code has another key and is never reused.
    """
    rows = read_manifest(manifest_path)
    if limit:
        rows = rows.iloc[:limit]
    key = None
    if cache_dir is not None:
        key = cache_key(model_path, manifest_path, {"limit": limit})
        cached = Path(cache_dir) / f"logprobs-{key}.npz"
        if cached.exists():
            with np.load(cached) as z:
                return AcousticOutputs([z[f"u{i}"] for i in range(len(rows))], rows,
                                       float(z["seconds"]) if "seconds" in z else 0.0, True)
    if threads:
        torch.set_num_threads(threads)
    model, ckpt, fe, mean, std = load_checkpoint(model_path)
    t0 = time.perf_counter()
    with torch.inference_mode():
        audio = ManifestAudio(manifest_path, fe.cfg.sample_rate)
        out = [utterance_logprobs(model, fe, mean, std, audio[i]) for i in range(len(rows))]
    seconds = time.perf_counter() - t0
    if key is not None:
        with atomic_open(Path(cache_dir) / f"logprobs-{key}.npz", "wb") as f:
            np.savez(f, seconds=np.float64(seconds), **{f"u{i}": a for i, a in enumerate(out)})
    return AcousticOutputs(out, rows, seconds, False)

"""Log-mel features and their normalisation statistics (audio decoding is in
:mod:`asrflow.data.audio`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio


@dataclass(frozen=True)
class FeatureConfig:
    """The ``features`` block of params.yaml."""

    sample_rate: int
    n_mels: int
    win_ms: float
    hop_ms: float

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> "FeatureConfig":
        return cls(**p)

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))


class LogMel(torch.nn.Module):
    """Waveform (samples,) -> log-mel features (frames, n_mels).

    A centred, reflect-padded STFT with a Hann window of ``win_length`` (zero-padded to
    ``n_fft``), power spectrum, triangular mel filters (torchaudio's HTK filterbank) and
    natural log with a 1e-6 floor. The power is taken as re^2 + im^2 and the filterbank is
    applied frame-major, so the result is written once in its (frames, n_mels) layout: this
    runs in the data loader, once per utterance per epoch, so it sets the loader's pace.
    """

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        self.n_fft = 512 if cfg.win_length <= 512 else cfg.win_length
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        self.register_buffer("fb", torchaudio.functional.melscale_fbanks(
            self.n_fft // 2 + 1, 0.0, cfg.sample_rate / 2, cfg.n_mels, cfg.sample_rate), persistent=False)

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, self.n_fft, self.cfg.hop_length, self.cfg.win_length, self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        sq = torch.view_as_real(spec.transpose(-1, -2)).square()  # (frames, bins, re/im)
        power = sq[..., 0].add_(sq[..., 1])  # re^2 + im^2 (a sum over the last dim is ~5x slower)
        return torch.matmul(power, self.fb).add_(1e-6).log_()


def utterance_features(wav: np.ndarray, fe: LogMel, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised log-mel features (frames, n_mels) of one decoded waveform."""
    return fe(torch.from_numpy(wav)).sub_(mean).div_(std)


def num_frames(num_samples: int, cfg: FeatureConfig) -> int:
    """Feature frames for a waveform of ``num_samples`` (centered STFT)."""
    return num_samples // cfg.hop_length + 1


def compute_stats(waveforms: Iterable[np.ndarray], cfg: FeatureConfig) -> dict[str, Any]:
    """Per-mel-bin mean and std of log-mel features over decoded ``waveforms`` (float64
    accumulation).

    Returns ``{"mean": [...], "std": [...], "frames": N, "utterances": K}``.
    """
    fe = LogMel(cfg)
    total = np.zeros(cfg.n_mels)
    total_sq = np.zeros(cfg.n_mels)
    frames = n = 0
    for wav in waveforms:
        n += 1
        feats = fe(torch.from_numpy(wav)).double().numpy()
        total += feats.sum(0)
        total_sq += (feats ** 2).sum(0)
        frames += feats.shape[0]
    if not n:
        raise ValueError("no utterances to compute feature statistics from")
    mean = total / frames
    std = np.sqrt(np.maximum(total_sq / frames - mean ** 2, 1e-10))
    return {"mean": [round(float(x), 6) for x in mean], "std": [round(float(x), 6) for x in std],
            "frames": frames, "utterances": n}


def read_stats(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    s = json.loads(Path(path).read_text())
    return torch.tensor(s["mean"], dtype=torch.float32), torch.tensor(s["std"], dtype=torch.float32)

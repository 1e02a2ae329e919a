"""Training-time data augmentation (DeepSpeech2 / deepspeech.pytorch style).

The ``train.augment`` block of params.yaml is an ordered list of steps, each applied to an
utterance with its own probability::

    augment:
      - {type: speed, prob: 0.5, factors: [0.9, 1.0, 1.1]}       # resample: tempo and pitch (sox "speed")
      - {type: volume, prob: 0.5, gain_db: [-6.0, 6.0]}          # uniform gain in dB
      - {type: shift, prob: 0.5, max_ms: 50}                     # time shift within +-max_ms, zero-filled
      - {type: noise, prob: 0.3, dir: data/noise, snr_db: [10.0, 30.0]}  # additive noise from files
      - {type: specaugment, prob: 1.0, freq_masks: 2, freq_width: 15, time_masks: 2, time_width: 40,
         time_max_frac: 0.2}

Waveform steps (speed, volume, shift, noise) run in list order in :meth:`Augmenter.wave` on the
decoded waveform; ``specaugment`` steps run in :meth:`Augmenter.spec` on the normalised
features, after all waveform steps, wherever they sit in the list.

All randomness comes from the ``rng`` argument: derive one generator per utterance with
:func:`utterance_rng` ``(seed, epoch, index)`` and the augmentation is identical after a resume
and whatever the number of DataLoader workers. Steps with probability 0 are dropped when the
:class:`Augmenter` is built, so an all-zero (or empty) configuration is an exact no-op that
returns its input object.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from asrflow.features.augment_config import (WAVE_TYPES, AugmentConfig, NoiseStep, ShiftStep, SpeedStep,
                                             VolumeStep)

if TYPE_CHECKING:
    import torch

# Speed factors are applied as the rational orig:new rate of their nearest fraction with a
# denominator up to this (0.9 -> 9/10, 1.1 -> 11/10, 0.95 -> 19/20), keeping resampling kernels small.
SPEED_MAX_DENOMINATOR = 100


def utterance_rng(seed: int, epoch: int, index: int, copy: int = 0) -> np.random.Generator:
    """The generator for utterance ``index`` in ``epoch`` (its ``copy``-th appearance, when a
    weighted dataset repeats it): independent of the worker, of the batch it lands in and of
    how many utterances were drawn before (resume-safe)."""
    for name, v in (("seed", seed), ("epoch", epoch), ("index", index), ("copy", copy)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"utterance_rng: {name} must be a non-negative integer, got {v!r}")
    return np.random.default_rng([int(seed), int(epoch), int(index), *([int(copy)] if copy else [])])


# ---------------------------------------------------------------- application


def _clip32(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -1.0, 1.0, out=x) if x.dtype == np.float32 else np.clip(x, -1.0, 1.0).astype(np.float32)


def _power(x: np.ndarray) -> float:
    x = x.astype(np.float64, copy=False)  # einsum, not np.dot: no BLAS thread pool in loader workers
    return float(np.einsum("i,i->", x, x) / max(len(x), 1))


def _resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Band-limited resampling (torchaudio); torch loads lazily, since params validation imports this module."""
    import torch
    import torchaudio

    return torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                                          orig_freq=orig, new_freq=new).numpy()


class Augmenter:
    """Applies an :class:`AugmentConfig` to waveforms at ``sample_rate`` and to features.

    Never modifies its inputs; returns the input object itself when nothing was applied.
    Picklable (DataLoader workers). Noise files are decoded on first use and kept in memory
    per process; call :meth:`preload` before forking workers to share one copy.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int):
        self.cfg, self.sample_rate = cfg, int(sample_rate)
        active = [s for s in cfg.steps if s.prob > 0]
        self._wave_steps = [s for s in active if s.type in WAVE_TYPES]
        self._spec_steps = [s for s in active if s.type == "specaugment"]
        self._noise_cache: dict[str, np.ndarray] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._wave_steps or self._spec_steps)

    def preload(self) -> None:
        """Decode every noise file now (otherwise on first draw)."""
        for s in self._wave_steps:
            if isinstance(s, NoiseStep):
                for f in s.files:
                    self._noise_wave(f)

    # -- waveform
    def wave(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply the waveform steps in list order, each with its probability, to a mono
        waveform; the result is float32 in [-1, 1] (``wav`` itself if no step fired)."""
        out = wav
        for s in self._wave_steps:
            if rng.random() < s.prob:
                out = getattr(self, "_" + s.type)(s, out, rng)
        return out

    def _speed(self, s: SpeedStep, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        f = Fraction(s.factors[int(rng.integers(len(s.factors)))]).limit_denominator(SPEED_MAX_DENOMINATOR)
        if f == 1 or len(wav) == 0:
            return wav
        # Play the samples as if recorded at f x the rate: n samples become n / f.
        return _clip32(_resample(wav, f.numerator, f.denominator))

    def _volume(self, s: VolumeStep, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = rng.uniform(*s.gain_db) if s.gain_db[1] > s.gain_db[0] else s.gain_db[0]
        return _clip32(wav * np.float32(10.0 ** (g / 20.0)))

    def _shift(self, s: ShiftStep, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        m = int(round(s.max_ms * self.sample_rate / 1000.0))
        k = int(rng.integers(-m, m + 1))
        if k == 0:
            return wav
        out = np.zeros(len(wav), dtype=np.float32)
        if abs(k) < len(wav):
            if k > 0:
                out[k:] = wav[:-k]
            else:
                out[:k] = wav[-k:]
        return _clip32(out)

    def _noise_wave(self, path: str) -> np.ndarray:
        x = self._noise_cache.get(path)
        if x is None:
            data, sr = sf.read(path, dtype="float32", always_2d=True)
            x = data.mean(axis=1, dtype=np.float32)
            if sr != self.sample_rate:
                x = _resample(x, sr, self.sample_rate)
            self._noise_cache[path] = x = np.ascontiguousarray(x, dtype=np.float32)
        return x

    def _noise(self, s: NoiseStep, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        path = s.files[int(rng.integers(len(s.files)))]
        snr = rng.uniform(*s.snr_db) if s.snr_db[1] > s.snr_db[0] else s.snr_db[0]
        noise, n = self._noise_wave(path), len(wav)
        if noise.shape[0] >= n:
            o = int(rng.integers(0, noise.shape[0] - n + 1))
            seg = noise[o:o + n]
        else:  # loop a short file, starting at a random point
            o = int(rng.integers(0, noise.shape[0]))
            seg = np.take(noise, np.arange(o, o + n) % noise.shape[0])
        p_sig, p_noise = _power(wav), _power(seg)
        if p_sig == 0.0 or p_noise == 0.0:  # SNR undefined: leave the utterance alone
            return wav
        scale = math.sqrt(p_sig / (p_noise * 10.0 ** (snr / 10.0)))
        return _clip32(wav + np.float32(scale) * seg)

    # -- features
    def spec(self, feats: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Apply the SpecAugment steps to normalised features (frames, n_mels); masked cells
        become 0. Returns ``feats`` itself if no step fired, else a masked copy."""
        out = feats
        for s in self._spec_steps:
            if rng.random() >= s.prob:
                continue
            if out is feats:
                out = feats.clone()
            frames, bins = out.shape[-2], out.shape[-1]
            for _ in range(s.freq_masks):
                w = int(rng.integers(0, min(s.freq_width, bins) + 1))
                f0 = int(rng.integers(0, bins - w + 1))
                out[..., f0:f0 + w] = 0
            tmax = min(s.time_width, math.floor(s.time_max_frac * frames + 1e-9))
            for _ in range(s.time_masks):
                w = int(rng.integers(0, tmax + 1))
                t0 = int(rng.integers(0, frames - w + 1))
                out[..., t0:t0 + w, :] = 0
        return out

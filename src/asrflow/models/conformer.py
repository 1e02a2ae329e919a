"""Conformer-CTC (Gulati et al., 2020; NeMo's CTC variant): convolutional subsampling, then
layers of macaron feed-forward halves around multi-head self-attention with relative
positional encoding (Transformer-XL style, as in the paper) and a convolution module, and a
1x1 convolution to the vocabulary.

Padded frames are masked out of attention and zeroed before every convolution, so an
utterance's log-probs do not depend on the batch it was decoded in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from asrflow.features.geometry import conv_output_length


@dataclass
class ConformerConfig:
    """Architecture; built from the family's block of params.yaml and stored in checkpoints."""

    n_mels: int
    vocab_size: int
    d_model: int
    layers: int
    heads: int
    ff_expansion: int
    conv_kernel: int              # the convolution module's depthwise kernel (odd)
    subsampling: int              # time reduction of the conv front end: 2, 4 or 8 (stride-2 convs)
    dropout: float

    @classmethod
    def from_params(cls, block: dict[str, Any], n_mels: int, vocab_size: int) -> "ConformerConfig":
        return cls(n_mels=n_mels, vocab_size=vocab_size, **block)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConformerConfig":
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def time_stride(self) -> int:
        return self.subsampling


def _mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.arange(frames, device=lengths.device)[None] < lengths[:, None]     # (B, T) True = real


class _FeedForward(nn.Sequential):
    def __init__(self, d: int, expansion: int, dropout: float):
        super().__init__(nn.LayerNorm(d), nn.Linear(d, d * expansion), nn.SiLU(), nn.Dropout(dropout),
                         nn.Linear(d * expansion, d), nn.Dropout(dropout))


class _RelPositionAttention(nn.Module):
    """Self-attention whose scores add a content term and a relative-position term, each with
    its own learnt bias (Transformer-XL's u and v)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.norm = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.pos = nn.Linear(d, d, bias=False)
        self.bias_u = nn.Parameter(torch.zeros(heads, self.dk))
        self.bias_v = nn.Parameter(torch.zeros(heads, self.dk))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        x = self.norm(x)
        q = self.q(x).view(b, t, self.h, self.dk)
        k = self.k(x).view(b, t, self.h, self.dk).transpose(1, 2)
        v = self.v(x).view(b, t, self.h, self.dk).transpose(1, 2)
        p = self.pos(pos).view(1, -1, self.h, self.dk).transpose(1, 2)           # (1, h, 2T-1, dk)
        content = (q + self.bias_u).transpose(1, 2) @ k.transpose(-1, -2)         # (B, h, T, T)
        position = (q + self.bias_v).transpose(1, 2) @ p.transpose(-1, -2)        # (B, h, T, 2T-1)
        # pos[j] encodes the relative position (T-1) - j; query i and key j are i - j apart
        rel = (t - 1) - torch.arange(t, device=x.device)[:, None] + torch.arange(t, device=x.device)[None]
        position = position.gather(-1, rel.expand(b, self.h, t, t))
        scores = (content + position) / math.sqrt(self.dk)
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
        att = self.drop(scores.softmax(-1))
        return self.drop(self.o((att @ v).transpose(1, 2).reshape(b, t, -1)))


class _ConvModule(nn.Module):
    def __init__(self, d: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pointwise1 = nn.Conv1d(d, 2 * d, 1)
        self.depthwise = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.bn = nn.BatchNorm1d(d)
        self.pointwise2 = nn.Conv1d(d, d, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = nn.functional.glu(self.pointwise1(self.norm(x).transpose(1, 2)), dim=1)
        x = self.depthwise(x * keep[:, None, :].to(x.dtype))
        x = self.pointwise2(nn.functional.silu(self.bn(x)))
        return self.drop(x.transpose(1, 2))


class _Layer(nn.Module):
    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        d = cfg.d_model
        self.ff1 = _FeedForward(d, cfg.ff_expansion, cfg.dropout)
        self.attention = _RelPositionAttention(d, cfg.heads, cfg.dropout)
        self.conv = _ConvModule(d, cfg.conv_kernel, cfg.dropout)
        self.ff2 = _FeedForward(d, cfg.ff_expansion, cfg.dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attention(x, pos, keep)
        x = x + self.conv(x, keep)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class Conformer(nn.Module):
    """Input (batch, frames, n_mels) normalised features -> (batch, frames', vocab) log-probs."""

    streamable = False  # its attention sees the whole utterance: a stream re-decodes
    family = "conformer"  # what a checkpoint records

    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        convs: list[nn.Module] = []
        freq, c_in = cfg.n_mels, 1
        for _ in range(int(math.log2(cfg.subsampling))):
            convs.append(nn.Conv2d(c_in, d, 3, 2, 1))
            c_in, freq = d, (freq - 1) // 2 + 1
        self.subsample = nn.ModuleList(convs)
        self.project = nn.Linear(d * freq, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.layers))
        self.out = nn.Conv1d(d, cfg.vocab_size, 1)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_length(lengths, 3, [2] * int(math.log2(self.cfg.subsampling)))

    def _positions(self, t: int, device: torch.device) -> torch.Tensor:
        """Sinusoidal encodings of the relative positions T-1, ..., -(T-1): (2T-1, d)."""
        d = self.cfg.d_model
        rel = torch.arange(t - 1, -t, -1, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
        pe = torch.zeros(2 * t - 1, d, device=device)
        pe[:, 0::2] = torch.sin(rel * freq)
        pe[:, 1::2] = torch.cos(rel * freq)
        return pe

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lens = x.unsqueeze(1), lengths                                         # (B, 1, T, F)
        for conv in self.subsample:  # each conv sees zeros, not the last one's values, past the end
            x = x * _mask(lens, x.shape[2])[:, None, :, None].to(x.dtype)
            x, lens = torch.relu(conv(x)), conv_output_length(lens, 3, [2])
        b, c, t, f = x.shape
        x = self.project(x.permute(0, 2, 1, 3).reshape(b, t, c * f)) * math.sqrt(self.cfg.d_model)
        out_lens = self.output_lengths(lengths).clamp(max=t)
        keep = _mask(out_lens, t)
        x = self.drop(x)
        pos = self.drop(self._positions(t, x.device).to(x.dtype))
        for layer in self.layers:
            x = layer(x, pos, keep)
        x = self.out((x * keep[..., None].to(x.dtype)).transpose(1, 2)).transpose(1, 2)
        return x.log_softmax(-1), out_lens

"""DeepSpeech2-style acoustic model: 2-D conv front end, bidirectional GRU stack, CTC head."""

from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Any

import torch
from torch import nn

from asrflow.geometry import conv_output_length


@dataclass
class ModelConfig:
    """Architecture; built from the ``train`` block of params.yaml and stored in checkpoints."""

    n_mels: int
    vocab_size: int
    conv_channels: int = 32
    conv_kernel: tuple[int, int] = (5, 5)
    conv_strides: list[tuple[int, int]] = field(default_factory=lambda: [(2, 2), (2, 1)])
    rnn_layers: int = 3
    rnn_hidden: int = 256
    dropout: float = 0.1

    @classmethod
    def from_params(cls, train: dict[str, Any], n_mels: int, vocab_size: int) -> "ModelConfig":
        return cls(n_mels=n_mels, vocab_size=vocab_size, conv_channels=train["conv_channels"],
                   conv_kernel=tuple(train["conv_kernel"]), conv_strides=[tuple(s) for s in train["conv_strides"]],
                   rnn_layers=train["rnn_layers"], rnn_hidden=train["rnn_hidden"], dropout=train["dropout"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conv_kernel"] = list(self.conv_kernel)
        d["conv_strides"] = [list(s) for s in self.conv_strides]
        return d

    @property
    def time_stride(self) -> int:
        s = 1
        for _, t in self.conv_strides:
            s *= t
        return s


class DeepSpeech2(nn.Module):
    """Input (batch, frames, n_mels) normalised features -> (batch, frames', vocab) log-probs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        kf, kt = cfg.conv_kernel
        layers: list[nn.Module] = []
        in_ch, freq = 1, cfg.n_mels
        for sf_, st in cfg.conv_strides:
            layers += [nn.Conv2d(in_ch, cfg.conv_channels, (kf, kt), (sf_, st), (kf // 2, kt // 2)),
                       nn.BatchNorm2d(cfg.conv_channels), nn.Hardtanh(0, 20, inplace=True)]
            in_ch = cfg.conv_channels
            freq = (freq + 2 * (kf // 2) - kf) // sf_ + 1
        self.conv = nn.Sequential(*layers)
        self.rnn = nn.GRU(cfg.conv_channels * freq, cfg.rnn_hidden, num_layers=cfg.rnn_layers,
                          batch_first=True, bidirectional=True, dropout=cfg.dropout if cfg.rnn_layers > 1 else 0.0)
        self.norm = nn.LayerNorm(2 * cfg.rnn_hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.rnn_hidden, cfg.vocab_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_length(lengths, self.cfg.conv_kernel[1], [t for _, t in self.cfg.conv_strides])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.transpose(1, 2).unsqueeze(1))          # (B, C, F', T')
        b, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * f)
        out_lens = self.output_lengths(lengths).clamp(max=t)
        # No pack_padded_sequence: on CPU it doubles the GRU's step time, and batches are
        # bucketed by duration, so the few padded frames cost less than packing does.
        x, _ = self.rnn(x)
        x = self.out(self.dropout(self.norm(x)))
        return x.log_softmax(-1), out_lens


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

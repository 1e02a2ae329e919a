"""DeepSpeech2-style acoustic model: 2-D conv front end, recurrent stack, CTC head.

The DeepSpeech2 family from params: GRU or LSTM layers, bidirectional or not, and for
unidirectional (streamable) models an optional lookahead convolution over a few future
frames (DeepSpeech2's "row convolution").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from asrflow.features.geometry import conv_output_length


@dataclass
class ModelConfig:
    """Architecture; built from the ``train`` block of params.yaml and stored in checkpoints."""

    n_mels: int
    vocab_size: int
    conv_channels: int
    conv_kernel: tuple[int, int]
    conv_strides: list[tuple[int, int]]
    rnn_layers: int
    rnn_hidden: int
    dropout: float
    rnn_type: str                 # gru | lstm
    bidirectional: bool
    lookahead: int                # future frames seen by the lookahead conv (unidirectional only); 0 = none

    @classmethod
    def from_params(cls, block: dict[str, Any], n_mels: int, vocab_size: int) -> "ModelConfig":
        """From params.yaml's ``model.deepspeech2`` block."""
        return cls(n_mels=n_mels, vocab_size=vocab_size, conv_channels=block["conv_channels"],
                   conv_kernel=tuple(block["subsampling"]["kernel"]),
                   conv_strides=[tuple(s) for s in block["subsampling"]["strides"]],
                   rnn_layers=block["rnn_layers"], rnn_hidden=block["rnn_hidden"], dropout=block["dropout"],
                   rnn_type=block["rnn_type"], bidirectional=block["bidirectional"], lookahead=block["lookahead"])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """The config :meth:`to_dict` wrote (lists back to tuples)."""
        return cls(**{**d, "conv_kernel": tuple(d["conv_kernel"]), "conv_strides": [tuple(s) for s in d["conv_strides"]]})

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

    family = "deepspeech2"  # what a checkpoint records

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
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cfg.rnn_type]
        self.rnn = rnn(cfg.conv_channels * freq, cfg.rnn_hidden, num_layers=cfg.rnn_layers, batch_first=True,
                       bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.rnn_layers > 1 else 0.0)
        width = cfg.rnn_hidden * (2 if cfg.bidirectional else 1)
        # each output frame mixes itself and `lookahead` future frames, channel by channel
        self.lookahead = (nn.Conv1d(width, width, cfg.lookahead + 1, groups=width, bias=False)
                          if cfg.lookahead else None)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(width, cfg.vocab_size)

    @property
    def streamable(self) -> bool:
        """Whether frames can be computed as audio arrives (:mod:`asrflow.serve.streaming`)."""
        return not self.cfg.bidirectional

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
        if self.lookahead is not None:  # pad the future with zeros so the length is kept
            x = self.lookahead(nn.functional.pad(x.transpose(1, 2), (0, self.cfg.lookahead))).transpose(1, 2)
        x = self.out(self.dropout(self.norm(x)))
        return x.log_softmax(-1), out_lens


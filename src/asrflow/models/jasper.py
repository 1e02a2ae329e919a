"""Jasper and QuartzNet: 1-D convolutions, batch norm, ReLU, dropout and residual connections.

Jasper BxR (Li et al., 2019): a prolog convolution (with the model's time stride), B blocks of
R sub-blocks (conv -> batch norm -> ReLU -> dropout; the last sub-block adds the residual
before its ReLU), an epilog of two convolutions (the first dilated) and a 1x1 convolution to
the vocabulary. "DR" (dense residual): a block's residual sums 1x1-conv + batch-norm
projections of the prolog's and every earlier block's output; otherwise only of its own input.
QuartzNet BxR (Kriman et al., 2020) is the same skeleton with time-channel separable
convolutions (a depthwise conv over time, then a pointwise conv over channels) and plain
residuals: family ``quartznet`` fixes those two choices, ``jasper`` leaves them to params.

Padded frames are zeroed before every convolution, so an utterance's log-probs do not depend
on the batch it was decoded in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from asrflow.features.geometry import conv_output_length


@dataclass
class JasperConfig:
    """Architecture; built from the family's block of params.yaml and stored in checkpoints."""

    n_mels: int
    vocab_size: int
    prolog: tuple[int, int, int]              # channels, kernel, time stride
    blocks: list[tuple[int, int]]             # per block: channels, kernel
    repeat: int                               # R: sub-blocks per block
    epilog: list[tuple[int, int, int]]        # per conv: channels, kernel, dilation
    dropout: float
    separable: bool                           # time-channel separable convs (QuartzNet)
    dense_residual: bool                      # Jasper DR

    @classmethod
    def from_params(cls, block: dict[str, Any], n_mels: int, vocab_size: int, **fixed: Any) -> "JasperConfig":
        b = {**block, **fixed}
        sub = b["subsampling"]
        return cls(n_mels=n_mels, vocab_size=vocab_size, prolog=(b["prolog"], sub["kernel"], sub["stride"]),
                   blocks=[tuple(x) for x in b["blocks"]], repeat=b["repeat"], epilog=[tuple(x) for x in b["epilog"]],
                   dropout=b["dropout"], separable=b["separable"], dense_residual=b["dense_residual"])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JasperConfig":
        return cls(**{**d, "prolog": tuple(d["prolog"]), "blocks": [tuple(x) for x in d["blocks"]],
                      "epilog": [tuple(x) for x in d["epilog"]]})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {**d, "prolog": list(self.prolog), "blocks": [list(x) for x in self.blocks],
                "epilog": [list(x) for x in self.epilog]}

    @property
    def time_stride(self) -> int:
        return self.prolog[2]


class _Conv(nn.Module):
    """A 1-D conv (separable or not; no bias, batch norm follows) over masked input."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1,
                 separable: bool = False):
        super().__init__()
        pad = dilation * (kernel // 2)
        if separable and kernel > 1:
            self.conv = nn.Sequential(nn.Conv1d(c_in, c_in, kernel, stride, pad, dilation, groups=c_in, bias=False),
                                      nn.Conv1d(c_in, c_out, 1, bias=False))
        else:
            self.conv = nn.Conv1d(c_in, c_out, kernel, stride, pad, dilation, bias=False)
        self.norm = nn.BatchNorm1d(c_out, eps=1e-3, momentum=0.1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x * mask))


class _Block(nn.Module):
    """R sub-blocks; the last adds the (projected) residuals before its activation."""

    def __init__(self, c_in: int, c_out: int, kernel: int, repeat: int, dropout: float, separable: bool,
                 residual_from: list[int]):
        super().__init__()
        self.subs = nn.ModuleList(_Conv(c_in if i == 0 else c_out, c_out, kernel, separable=separable)
                                  for i in range(repeat))
        self.residuals = nn.ModuleList(_Conv(c, c_out, 1) for c in residual_from)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, earlier: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        for sub in self.subs[:-1]:
            x = self.drop(torch.relu(sub(x, mask)))
        x = self.subs[-1](x, mask)
        for res, r in zip(self.residuals, earlier):
            x = x + res(r, mask)
        return self.drop(torch.relu(x))


class Jasper(nn.Module):
    """Input (batch, frames, n_mels) normalised features -> (batch, frames', vocab) log-probs."""

    streamable = False  # its convolutions see up to half a receptive field into the future: a stream re-decodes
    family = "jasper"  # what a checkpoint records

    def __init__(self, cfg: JasperConfig):
        super().__init__()
        self.cfg = cfg
        c, k, s = cfg.prolog
        self.prolog = _Conv(cfg.n_mels, c, k, stride=s, separable=cfg.separable)
        widths = [c]                      # outputs so far: the prolog's, then each block's
        self.blocks = nn.ModuleList()
        for ch, kernel in cfg.blocks:
            sources = widths if cfg.dense_residual else widths[-1:]
            self.blocks.append(_Block(widths[-1], ch, kernel, cfg.repeat, cfg.dropout, cfg.separable, sources))
            widths.append(ch)
        self.epilog = nn.ModuleList()
        for ch, kernel, dilation in cfg.epilog:
            self.epilog.append(_Conv(widths[-1], ch, kernel, dilation=dilation, separable=cfg.separable))
            widths.append(ch)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Conv1d(widths[-1], cfg.vocab_size, 1)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_length(lengths, self.cfg.prolog[1], [self.cfg.prolog[2]])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.transpose(1, 2)                                   # (B, n_mels, T)
        in_mask = (torch.arange(x.shape[2], device=x.device)[None] < lengths[:, None]).unsqueeze(1).to(x.dtype)
        x = self.drop(torch.relu(self.prolog(x, in_mask)))
        out_lens = self.output_lengths(lengths).clamp(max=x.shape[2])
        mask = (torch.arange(x.shape[2], device=x.device)[None] < out_lens[:, None]).unsqueeze(1).to(x.dtype)
        outputs = [x]
        for block in self.blocks:
            x = block(x, outputs if self.cfg.dense_residual else outputs[-1:], mask)
            outputs.append(x)
        for conv in self.epilog:
            x = self.drop(torch.relu(conv(x, mask)))
        x = self.out(x * mask).transpose(1, 2)
        return x.log_softmax(-1), out_lens

"""The report's figures, drawn with matplotlib (Agg: no display needed): the alpha/beta error
surface, the learning curve and WER by utterance duration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from asrflow.scoring.metrics import best_point  # noqa: E402


def _save(fig: Any, ax: Any, path: Path, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_surface(grid: list[dict[str, float]], path: Path, title: str, metric: str = "wer") -> None:
    """The grid's dev ``metric`` (wer or cer) over alpha and beta, the best point starred."""
    alphas = sorted({r["alpha"] for r in grid})
    betas = sorted({r["beta"] for r in grid})
    rate = {(r["alpha"], r["beta"]): r[metric] for r in grid}
    z = [[rate[(a, b)] for a in alphas] for b in betas]
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(alphas) > 1 and len(betas) > 1:
        cs = ax.contourf(alphas, betas, z, levels=20, cmap="viridis")
        fig.colorbar(cs, label=f"dev {metric.upper()} %")
    else:
        ax.plot(alphas if len(alphas) > 1 else betas, [v for row in z for v in row], marker="o")
    best = best_point(grid, metric)
    ax.plot(best["alpha"], best["beta"], "r*", markersize=14, label=f"best {best[metric]:.2f}%")
    ax.legend(loc="upper right")
    _save(fig, ax, path, title, "alpha (LM weight)", "beta (word insertion)")


def plot_curve(curve: list[dict[str, float]], path: Path, title: str) -> None:
    fig, ax1 = plt.subplots(figsize=(6, 4))
    ep = [r["epoch"] for r in curve]
    ax1.plot(ep, [r["train_loss"] for r in curve], "b-o", label="train CTC loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="b")
    ax2 = ax1.twinx()
    ax2.plot(ep, [r["dev_cer"] for r in curve], "r-s", label="dev CER %")
    ax2.plot(ep, [r["dev_wer"] for r in curve], "m-^", label="dev WER %")
    ax2.set_ylabel("dev error % (greedy)", color="r")
    fig.legend(loc="upper center", ncol=3, fontsize="small")
    fig.subplots_adjust(top=0.85)
    ax1.set_title(title, pad=24)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_duration(rows: list[dict[str, str]], path: Path, title: str) -> None:
    """WER by duration bin: greedy and beam+LM bars per test split (a bin a split has no
    utterances in left blank). Bin labels sort in the bins' order (see
    :func:`asrflow.scoring.results.wer_by_duration`)."""
    splits = list(dict.fromkeys(r["split"] for r in rows))
    bins = sorted({r["bin"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / (2 * len(splits))
    for si, split in enumerate(splits):
        by_bin = {r["bin"]: r for r in rows if r["split"] == split}
        for ki, (key, label) in enumerate((("greedy_wer", "greedy"), ("beam_wer", "beam+LM"))):
            xs = [i + (2 * si + ki) * width - 0.4 + width / 2 for i in range(len(bins))]
            ys = [float(by_bin[b][key]) if by_bin.get(b, {}).get(key) not in (None, "") else 0.0 for b in bins]
            ax.bar(xs, ys, width, label=f"{split} {label}", hatch="//" if key == "greedy_wer" else None,
                   alpha=0.85)
    ax.set_xticks(range(len(bins)))
    ax.set_xticklabels(bins)
    ax.legend(fontsize="small")
    _save(fig, ax, path, title, "utterance duration", "WER %")

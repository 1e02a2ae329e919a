"""The benchmark report: reports/<dataset>_wer.md with its plots beside it."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from asrflow.metrics import best_point  # noqa: E402


def read_csv(path: str | Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_surface(grid: list[dict[str, float]], path: Path, title: str) -> None:
    alphas = sorted({r["alpha"] for r in grid})
    betas = sorted({r["beta"] for r in grid})
    wer = {(r["alpha"], r["beta"]): r["wer"] for r in grid}
    z = [[wer[(a, b)] for a in alphas] for b in betas]
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(alphas) > 1 and len(betas) > 1:
        cs = ax.contourf(alphas, betas, z, levels=20, cmap="viridis")
        fig.colorbar(cs, label="dev WER %")
    else:
        ax.plot(alphas if len(alphas) > 1 else betas, [v for row in z for v in row], marker="o")
    best = best_point(grid)
    ax.plot(best["alpha"], best["beta"], "r*", markersize=14, label=f"best {best['wer']:.2f}%")
    ax.set_xlabel("alpha (LM weight)")
    ax.set_ylabel("beta (word insertion)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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


def _fmt(x: Any, nd: int = 2) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def write_report(dataset: str, metrics: dict[str, dict[str, Any]], curve: list[dict[str, float]],
                 grid: list[dict[str, float]], out_md: str | Path) -> dict[str, Any]:
    """Write the markdown report and its PNGs (``<stem>_surface.png``, ``<stem>_curve.png``).

    ``metrics`` maps stage name to that stage's metrics JSON. Returns the headline figures.
    """
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    stem = out_md.stem
    surface, curve_png = out_md.with_name(f"{stem}_surface.png"), out_md.with_name(f"{stem}_curve.png")
    plot_surface(grid, surface, f"{dataset}: dev WER over the alpha/beta grid")
    plot_curve(curve, curve_png, f"{dataset}: learning curve")
    ev, tr, tu, man, lm = (metrics[k] for k in ("evaluate", "train", "tune", "manifest", "lm"))
    lines = [f"# asrflow benchmark report: `{dataset}`", "",
             "Word and character error rates (%) per test split, greedy CTC decoding and beam search "
             f"with the {lm.get('order', '?')}-gram KenLM at the alpha/beta tuned on dev.", "",
             "| split | utterances | greedy WER | greedy CER | beam+LM WER | beam+LM CER |",
             "|---|---:|---:|---:|---:|---:|"]
    for split in ev["splits"]:
        s = ev[split]
        lines.append(f"| {split} | {s['utterances']} | {_fmt(s['greedy_wer'])} | {_fmt(s['greedy_cer'])} | "
                     f"{_fmt(s['beam_wer'])} | {_fmt(s['beam_cer'])} |")
    grid_shape = f"{tu.get('alpha_count', '?')} x {tu.get('beta_count', '?')} = {tu['points']} points"
    lines += ["", "## Decoder and language model", "",
              f"- tuned on dev ({tu['utterances']} utterances, alpha x beta grid {grid_shape}, "
              f"{_fmt(tu.get('grid_seconds', 0.0), 1)} s): alpha = {tu['alpha']}, beta = {tu['beta']} "
              f"(dev WER {_fmt(tu['dev_wer'])}%, greedy dev WER {_fmt(tu['greedy_dev_wer'])}%)",
              f"- {tu.get('mode', 'lexicon')} beam search, beam size {tu['beam_size']}; lexicon of "
              f"{lm.get('vocabulary', '?')} words",
              f"- {lm.get('order', '?')}-gram KenLM: {lm.get('ngrams', '?')} n-grams from {lm.get('sentences', '?')} "
              f"sentences, {lm.get('binary_mb', '?')} MB on disk; dev perplexity {lm.get('dev_perplexity', '?')} "
              f"(OOV {lm.get('dev_oov_rate', '?')}%)"]
    if lm.get("char_order"):
        lines.append(f"- character {lm['char_order']}-gram for lexicon-free decoding: {lm.get('char_binary_mb', '?')} MB, "
                     f"dev perplexity {lm.get('char_dev_perplexity', '?')} per character")
    lines += ["", "![alpha/beta error surface](" + surface.name + ")", "",
              "## Model and training", "",
              f"- DeepSpeech2-style CTC model, {tr['params']:,} parameters",
              f"- {tr['epochs']} epochs, {tr['steps']} steps, {_fmt(tr['audio_hours'])} h of audio seen "
              f"(padding {_fmt(100 * tr.get('padding_fraction', 0.0), 1)}% of batch frames)",
              f"- training wall time {_fmt(tr['train_seconds'] / 60, 1)} min on {tr['device']} "
              f"({_fmt(tr.get('train_audio_s_per_s', 0.0), 1)} audio-s/s)",
              f"- best epoch {tr['best_epoch']} by dev CER ({_fmt(tr['best_dev_cer'])}%)",
              "", "![learning curve](" + curve_png.name + ")", "",
              "## Data", "",
              "Splits hold out whole speakers: the last column counts a split's speakers that also "
              "occur in training (0 = every test voice is unseen). Sentences are disjoint across splits.", "",
              "| split | utterances | hours | speakers | speakers also in train |", "|---|---:|---:|---:|---:|"]
    for key in sorted(k for k in man if k.endswith("_utterances")):
        split = key[: -len("_utterances")]
        shared = "—" if split == "train" else man.get(f"{split}_speakers_in_train", "?")
        lines.append(f"| {split} | {man[key]} | {_fmt(man.get(f'{split}_hours', 0.0), 3)} | "
                     f"{man.get(f'{split}_speakers', '?')} | {shared} |")
    rejected = {k[len("rejected_"):]: v for k, v in man.items() if k.startswith("rejected_")}
    lines += ["", f"Rejected by the manifest stage: {man.get('rejected', 0)}"
              + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items())) + ")" if rejected else ""), ""]
    out_md.write_text("\n".join(lines), encoding="utf-8")
    headline = {f"{s}_{k}": ev[s][k] for s in ev["splits"] for k in ("greedy_wer", "greedy_cer", "beam_wer", "beam_cer")}
    return headline


def load_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())

"""The benchmark report: reports/<dataset>_wer.md with its plots beside it.

Every results row carries its lineage (git commit, DVC hashes of the products it came from,
the MLflow run that recorded it); the report also compares this run with the dataset's
previous runs in MLflow.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from asrflow.common.files import write_text
from asrflow.evaluate.plots import plot_curve, plot_duration, plot_surface
from asrflow.scoring.metrics import grid_edges


#: how the report names each model family (params.yaml's model.family)
FAMILY_NAMES = {"deepspeech2": "DeepSpeech2-style", "jasper": "Jasper", "quartznet": "QuartzNet",
                "conformer": "Conformer"}


def read_csv(path: str | Path, numeric: bool = True) -> list[dict[str, Any]]:
    """CSV rows; with ``numeric`` every value as a float."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) for k, v in r.items()} for r in rows] if numeric else rows


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None or x == "":
        return "—"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _code(x: Any) -> str:
    return f"`{x}`" if x else "—"


# Sections whose content differs between two runs of identical products (timings, ids,
# history): repro.comparable_bytes leaves them out when comparing reports byte for byte.
VOLATILE_SECTIONS = ("## Lineage", "## Real-time factors", "## Compared with previous runs", "## Using the model")
LINEAGE_PRODUCTS = ("manifests", "vocab", "lm", "model")
MIN_RECORDED_PARAMS = 10  # fewer params on a previous report run: it predates logging the whole params.yaml


def _rate(x: Any) -> str:
    """A real-time factor: 3 significant digits (decoders run at 1e-4 or below)."""
    return "—" if x is None else f"{x:.3g}"


def _results(ev: dict[str, Any], lin: dict[str, Any]) -> list[str]:
    lines = ["| split | utterances | greedy WER | greedy CER | beam+LM WER | beam+LM CER | beam+LM S / D / I "
             "| git commit | manifests | vocab | LM | model | MLflow run |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---|"]
    dvc = lin["dvc"]
    tail = " | ".join([_code(lin["git_label"]), *(_code(dvc[k][:8]) for k in LINEAGE_PRODUCTS),
                       _code((ev.get("mlflow_run_id") or "")[:8])])
    for split in ev["splits"]:
        s = ev[split]
        sdi = " / ".join(str(s.get(f"beam_{op}", "?")) for op in ("substitutions", "deletions", "insertions"))
        lines.append(f"| {split} | {s['utterances']} | {_fmt(s['greedy_wer'])} | {_fmt(s['greedy_cer'])} | "
                     f"{_fmt(s['beam_wer'])} | {_fmt(s['beam_cer'])} | {sdi} | {tail} |")
    return lines


def _lineage(lin: dict[str, Any], run_ids: dict[str, str], products: dict[str, str]) -> list[str]:
    lines = ["## Lineage", "",
             f"- git commit `{lin['git_commit'] or 'none (not a git repository)'}`"
             + (f" **with uncommitted changes** ({', '.join(lin['git_changed'])})" if lin["git_dirty"] else
                " (clean working tree)"),
             "- DVC hashes (the `md5` dvc.lock records for each output; the Snakefile's `dvc commit` after a "
             "run and `dvc repro` write the same values):"]
    lines += [f"  - {name}: `{products[name]}` `{lin['dvc'][name]}`" for name in LINEAGE_PRODUCTS]
    lines.append("- MLflow runs: " + ", ".join(f"{stage} `{rid}`" for stage, rid in run_ids.items() if rid))
    return lines + [""]


def _rtf(ev: dict[str, Any], device: str, tu: dict[str, Any]) -> list[str]:
    lines = ["## Real-time factors", "",
             f"Compute seconds per second of audio on this machine ({device}; lower is faster), acoustic model "
             "and decoders measured separately.", "",
             "| split | audio (min) | acoustic model | greedy decoder | beam+LM decoder |", "|---|---:|---:|---:|---:|"]
    for split in ev["splits"]:
        s = ev[split]
        lines.append(f"| {split} | {_fmt(s.get('audio_seconds', 0.0) / 60, 1)} | {_rate(s.get('rtf_acoustic'))} | "
                     f"{_rate(s.get('rtf_greedy_decoder'))} | {_rate(s.get('rtf_beam_decoder'))} |")
    return lines + ["", f"The alpha/beta grid ({tu['points']} points on {tu['utterances']} dev utterances, "
                    f"{tu.get('workers') or 'all'} worker processes) took {_fmt(tu.get('grid_seconds', 0.0), 1)} s.", ""]


def _comparison(ev: dict[str, Any], params: dict[str, str], lin: dict[str, Any],
                previous: list[dict[str, Any]], m: str) -> list[str]:
    lines = ["## Compared with previous runs", ""]
    if not previous:
        return lines + ["No earlier report of this dataset in MLflow: this is the first.", ""]
    split, M = ev["splits"][0], m.upper()
    key = f"{split}_beam_{m}"
    scored = [r for r in previous if key in r["metrics"]]
    picks: dict[str, dict[str, Any]] = {}
    if previous:
        picks["last"] = previous[0]
    if scored:
        best = min(scored, key=lambda r: (r["metrics"][key], -r["start_time"]))
        picks["best" if best is not previous[0] else "last, best"] = best
        if best is previous[0]:
            picks.pop("last")
    lines += [f"From MLflow: {len(previous)} earlier report(s) of this dataset; the last one and the best by "
              f"{split} beam+LM {M}. The last column lists params.yaml values that differ from this run.", "",
              f"| run | date (UTC) | git commit | {split} greedy {M} | {split} beam+LM {M} | change | params that differ |",
              "|---|---|---|---:|---:|---:|---|"]
    this = ev[split][f"beam_{m}"]
    lines.append(f"| this run | — | {_code(lin['git_label'])} | {_fmt(ev[split][f'greedy_{m}'])} | {_fmt(this)} | — | — |")
    for label, r in picks.items():
        got, before = r["metrics"], r["params"]
        # keys that run recorded (a key params.yaml gained since then is not a change of value)
        diff = [f"`{k}`: {before[k]} → {params.get(k, '—')}" for k in sorted(before) if params.get(k) != before[k]]
        if len(before) < MIN_RECORDED_PARAMS:
            shown = "not recorded (an earlier asrflow logged no full params.yaml)"
        else:
            shown = "; ".join(diff[:6]) + (f"; … {len(diff) - 6} more" if len(diff) > 6 else "") if diff else "none"
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["start_time"] / 1000))
        change = f"{this - got[key]:+.2f}" if key in got else "—"
        lines.append(f"| {label} `{r['run_id'][:8]}` | {when} | {_code(r['commit_label'])} | "
                     f"{_fmt(got.get(f'{split}_greedy_{m}'))} | {_fmt(got.get(key))} | {change} | {shown} |")
    return lines + ["", f"The change column is this run's {M} minus that run's (negative = better).", ""]


def _duration(rows: list[dict[str, str]], png: str) -> list[str]:
    lines = ["## WER by utterance duration", "",
             "| split | duration | utterances | words | greedy WER | beam+LM WER |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['split']} | {r['bin']} | {r['utterances']} | {r['words']} | "
                     f"{_fmt(float(r['greedy_wer']) if r['greedy_wer'] else None)} | "
                     f"{_fmt(float(r['beam_wer']) if r['beam_wer'] else None)} |")
    return lines + ["", f"![WER by duration]({png})", ""]


def _top_errors(errors: dict[str, list[tuple[str, int]]], unit: str = "word") -> list[str]:
    lines = [f"## Most frequent {unit} errors (beam+LM)", "",
             "`ref -> hyp` is a substitution, `ref -> *` a deletion, `* -> hyp` an insertion; the full "
             "alignments are in `results/<dataset>/evaluate/errs-<split>-beam_lm.txt`.", ""]
    for split, errs in errors.items():
        lines.append(f"- **{split}**: " + (", ".join(f"`{e}` ×{n}" for e, n in errs) if errs else "none"))
    return lines + [""]


def _oov(ev: dict[str, Any], lm: dict[str, Any], unit: str = "word") -> list[str]:
    """Out-of-vocabulary words (characters, for Mandarin, whose LM's words are characters) of
    each scored split and, when the lexicon-free decoder with the character LM ran beside the
    lexicon decoder, the two side by side (which handles OOVs better)."""
    splits = [s for s in ["dev", *ev["splits"]] if f"{s}_tokens" in lm]
    if not splits:
        return []
    why = ("Words the lexicon cannot spell are errors a lexicon decoder cannot avoid; real speech always has some."
           if unit == "word" else "The LM's words are characters: a character it never saw is one the beam search "
           "can only keep against the LM.")
    lines = [f"## Out-of-vocabulary {unit}s", "", f"{why} Rates are of {unit} tokens.", "",
             f"| split | {unit}s | not in the lexicon (LM) | distinct such {unit}s | not in any training transcript "
             "| LM perplexity |", "|---|---:|---:|---:|---:|---:|"]
    for s in splits:
        lines.append(f"| {s} | {lm[f'{s}_tokens']} | {_fmt(lm.get(f'{s}_oov_rate'))}% | {lm.get(f'{s}_oov_types', '?')} "
                     f"| {_fmt(lm.get(f'{s}_train_oov_rate'))}% | {_fmt(lm.get(f'{s}_perplexity'), 1)} |")
    charlm = [s for s in ev["splits"] if "charlm_wer" in ev[s]]
    if charlm:
        lines += ["", "Lexicon decoding (word LM) beside lexicon-free decoding (character LM, its own alpha/beta "
                  "tuned on dev):", "",
                  "| split | greedy WER / CER | lexicon + word LM WER / CER | lexicon-free + char LM WER / CER |",
                  "|---|---:|---:|---:|"]
        for s in charlm:
            e = ev[s]
            lines.append(f"| {s} | {_fmt(e['greedy_wer'])} / {_fmt(e['greedy_cer'])} | {_fmt(e['beam_wer'])} / "
                         f"{_fmt(e['beam_cer'])} | {_fmt(e['charlm_wer'])} / {_fmt(e['charlm_cer'])} |")
        for s in charlm:
            e = ev[s]
            better = "the lexicon decoder" if e["beam_wer"] < e["charlm_wer"] else \
                "the lexicon-free decoder" if e["charlm_wer"] < e["beam_wer"] else "neither"
            lines.append(f"\nOn {s}, {better} has the lower WER ({_fmt(e['beam_wer'])}% with the lexicon, "
                         f"{_fmt(e['charlm_wer'])}% without), with {_fmt(lm.get(f'{s}_oov_rate'))}% of its words "
                         "outside the lexicon.")
    return lines + [""]


def _overlap(man: dict[str, Any]) -> list[str]:
    """What the manifests say about held-out speakers and sentences, split by split."""
    out = []
    for key in sorted(k for k in man if k.endswith("_speakers_in_train")):
        split = key[: -len("_speakers_in_train")]
        spk, n_spk, txt = man[key], man.get(f"{split}_speakers", 0), man.get(f"{split}_texts_in_train")
        who = (f"none of its {n_spk} speakers occurs in training" if spk == 0 else
               f"{spk} of its {n_spk} speakers also occur{'s' if spk == 1 else ''} in training")
        what = ("" if txt is None else "; no sentence of it is in training" if txt == 0 else
                f"; {txt} of its sentences are also in training")
        out.append(f"- {split}: {who}{what}.")
    return out


def write_report(dataset: str, metrics: dict[str, dict[str, Any]], curve: list[dict[str, float]],
                 grid: list[dict[str, float]], out_md: str | Path, *, by_duration: list[dict[str, str]],
                 lineage: dict[str, Any], products: dict[str, str], top_errors: dict[str, list[tuple[str, int]]],
                 params: dict[str, str], previous: list[dict[str, Any]],
                 records: dict[str, dict[str, Any]] | None = None, metric: str = "wer") -> dict[str, Any]:
    """Write the markdown report and its PNGs (``<stem>_surface.png``, ``_curve.png``, ``_duration.png``).

    ``metrics`` maps stage name to that stage's metrics JSON (its figures) and ``records`` to
    its lineage record (MLflow run id, timings, names, paths); ``lineage`` is
    :func:`asrflow.pipeline.lineage.lineage` over ``products`` (name -> path); ``previous`` are the
    dataset's earlier report runs from MLflow, newest first; ``metric`` is the dataset's
    headline error rate (``cer`` for Mandarin: :func:`asrflow.scoring.metrics.headline`), the
    one tuning chose by and runs are compared on. Returns the headline figures.
    """
    M, unit = metric.upper(), "character" if metric == "cer" else "word"
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    stem = out_md.stem
    surface, curve_png, dur_png = (out_md.with_name(f"{stem}_{k}.png") for k in ("surface", "curve", "duration"))
    plot_surface(grid, surface, f"{dataset}: dev {M} over the alpha/beta grid", metric)
    plot_curve(curve, curve_png, f"{dataset}: learning curve")
    plot_duration(by_duration, dur_png, f"{dataset}: test WER by utterance duration")
    records = records or {}
    ev, tr, tu, man, lm, reg = (_merged(metrics[k], records.get(k, {}))
                                for k in ("evaluate", "train", "tune", "manifest", "lm", "register"))
    run_ids = {k: records.get(k, {}).get("mlflow_run_id", "")
               for k in ("manifest", "lm", "train", "tune", "evaluate", "register")}
    lines = [f"# asrflow benchmark report: `{dataset}`", "",
             "Word and character error rates (%) per test split, greedy CTC decoding and beam search "
             f"with the {lm.get('order', '?')}-gram KenLM at the alpha/beta tuned on dev by {M}; S / D / I are the "
             "word substitutions, deletions and insertions. The last columns are the row's lineage (details below)."
             + (" The headline is CER: the transcripts are characters without word boundaries, so WER counts "
                "whole sentences." if metric == "cer" else ""), "",
             *_results(ev, lineage), "", *_oov(ev, lm, unit), *_lineage(lineage, run_ids, products),
             *_comparison(ev, params, lineage, previous, metric), *_rtf(ev, tr.get("device", "?"), tu)]
    grid_shape = f"{tu.get('alpha_count', '?')} x {tu.get('beta_count', '?')} = {tu['points']} points"
    lines += ["## Decoder and language model", "",
              f"- tuned on dev ({tu['utterances']} utterances, alpha x beta grid {grid_shape}): "
              f"alpha = {tu['alpha']}, beta = {tu['beta']} "
              f"(dev {M} {_fmt(tu[f'dev_{metric}'])}%, greedy dev {M} {_fmt(tu[f'greedy_dev_{metric}'])}%)",
              f"- {tu.get('mode', 'lexicon')} beam search, beam size {tu['beam_size']}; lexicon of "
              f"{lm.get('vocabulary', '?')} words",
              f"- {lm.get('order', '?')}-gram KenLM: {lm.get('ngrams', '?')} n-grams from {lm.get('sentences', '?')} "
              f"sentences, {lm.get('binary_mb', '?')} MB on disk; dev perplexity {lm.get('dev_perplexity', '?')} "
              f"(OOV {lm.get('dev_oov_rate', '?')}%)"]
    edges = grid_edges(grid, {"alpha": tu["alpha"], "beta": tu["beta"]})
    if edges:
        lines.append(f"- **the tuned point sits on the grid's edge ({'; '.join(edges)})**: the best point may lie "
                     "outside the searched range; widen `tune.alpha` / `tune.beta` in params.yaml and re-run")
    if lm.get("char_order"):
        lines.append(f"- character {lm['char_order']}-gram for lexicon-free decoding: {lm.get('char_binary_mb', '?')} MB, "
                     f"dev perplexity {lm.get('char_dev_perplexity', '?')} per character")
    if "lexicon_free_alpha" in tu:  # tuned beside the headline mode, on its own grid over the same ranges
        lines.append(f"- lexicon-free with the character LM, tuned beside it: alpha = {tu['lexicon_free_alpha']}, "
                     f"beta = {tu['lexicon_free_beta']} (dev {M} {_fmt(tu[f'lexicon_free_dev_{metric}'])}%, alpha x beta "
                     f"grid {tu.get('lexicon_free_alpha_count', '?')} x {tu.get('lexicon_free_beta_count', '?')})")
    lines += ["", "![alpha/beta error surface](" + surface.name + ")", "",
              *_duration(by_duration, dur_png.name), *_top_errors(top_errors, unit),
              "## Model and training", "",
              f"- {FAMILY_NAMES.get(tr.get('model_family', 'deepspeech2'), tr.get('model_family'))} CTC model, "
              f"{tr['params']:,} parameters",
              f"- {tr['epochs']} epochs, {tr['steps']} steps, {_fmt(tr['audio_hours'])} h of audio seen "
              f"(padding {_fmt(100 * tr.get('padding_fraction', 0.0), 1)}% of batch frames)",
              f"- training wall time {_fmt(tr['train_seconds'] / 60, 1)} min on {tr['device']} "
              f"({_fmt(tr.get('train_audio_s_per_s', 0.0), 1)} audio-s/s)",
              f"- best epoch {tr['best_epoch']} by dev CER ({_fmt(tr['best_dev_cer'])}%)",
              "", "![learning curve](" + curve_png.name + ")", "",
              "## Data", "", *_overlap(man), "",
              "| split | utterances | hours | speakers | speakers also in train | sentences also in train |",
              "|---|---:|---:|---:|---:|---:|"]
    for key in sorted(k for k in man if k.endswith("_utterances")):
        split = key[: -len("_utterances")]
        shared = ("—", "—") if split == "train" else (man.get(f"{split}_speakers_in_train", "?"),
                                                       man.get(f"{split}_texts_in_train", "?"))
        lines.append(f"| {split} | {man[key]} | {_fmt(man.get(f'{split}_hours', 0.0), 3)} | "
                     f"{man.get(f'{split}_speakers', '?')} | {shared[0]} | {shared[1]} |")
    if isinstance(man.get("parts"), dict):  # a combined dataset: where each split's rows came from
        lines += ["", "Drawn from its parts (training sees each utterance of a part *weight* times per epoch):", ""]
        lines += [f"- {name} ({part.get('source', '?')}), weight {part.get('weight', 1)}: " + ", ".join(
            f"{k[: -len('_utterances')]} {v}" for k, v in sorted(part.items()) if k.endswith("_utterances"))
            + " utterances" for name, part in man["parts"].items()]
    rejected = {k[len("rejected_"):]: v for k, v in man.items() if k.startswith("rejected_")}
    lines += ["", f"Rejected by the manifest stage: {man.get('rejected', 0)} utterances "
              "(`data/<dataset>/manifests/rejects.parquet` lists each with its reason)."]
    if rejected:
        lines += ["", "| reason | utterances |", "|---|---:|", *(f"| {k} | {v} |" for k, v in sorted(rejected.items()))]
    lines += ["", "## Using the model", "",
              f"Registered in MLflow as `{reg.get('model_uri', '?')}` (model, vocabulary, feature statistics, LM and "
              f"the tuned decoder settings); the same package is in `{reg.get('package', '?')}`:", "",
              "```sh", f"asrflow transcribe --model {reg.get('model_uri', '?')} audio.flac other.wav", "```", ""]
    write_text(out_md, "\n".join(lines))
    return {f"{s}_{k}": ev[s][k] for s in ev["splits"] for k in ("greedy_wer", "greedy_cer", "beam_wer", "beam_cer")}


def _merged(figures: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """A stage's figures and its lineage record as one mapping, nested mappings merged (the
    report reads both: ``evaluate``'s splits and per-split figures, ``train``'s device)."""
    out = dict(figures)
    for k, v in record.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else out.get(k, v)
    return out


def load_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())

"""Evaluating a trained model on a test split: greedy and tuned beam+LM decoding of the
acoustic model's (cached) log-probs, WER/CER with S/D/I counts, real-time factors measured
separately for the acoustic model and each decoder, the per-utterance result files (icefall-
and sclite-style) and WER by utterance duration."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from asrflow.decode.beam import BeamSearch, greedy_decode
from asrflow.decode.logprobs import compute_logprobs
from asrflow.scoring.metrics import char_errors, corpus_rates, word_errors
from asrflow.scoring.results import (trn_id, wer_by_duration, write_errs, write_recogs, write_result, write_trn,
                                     write_wer_summary)
from asrflow.text.vocab import Tokenizer



def _timed(fn, items):
    t0 = time.perf_counter()
    out = [fn(x) for x in items]
    return out, time.perf_counter() - t0


def _pct(x):
    return "" if x is None else round(x, 4)


def evaluate_split(split: str, model_pt: str | Path, manifest: str | Path, cache_dir: str | Path,
                   search: BeamSearch, out_dir: Path, max_utterances: int, duration_bins: list[float],
                   charlm: BeamSearch | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """Decode ``split`` greedily and with ``search`` (weights already set) and score both; with
    ``charlm`` (a lexicon-free search with the character LM) a third setting beside them. The
    settings' names in the result files: ``greedy``, ``beam_lm``, ``beam_charlm`` (whose
    metrics are prefixed ``charlm_``).

    Writes ``<split>_recogs.tsv``, the icefall-style ``recogs-``/``errs-``/``wer-summary-``
    files and the sclite-style ``ref-<split>.trn``, ``hyp-<split>-<setting>.trn`` and
    ``result-<split>-<setting>.txt`` (WER per speaker) into ``out_dir``. Returns the split's
    metrics, its WER-by-duration rows (one per bin holding utterances, in the bins' order,
    for the DVC plot) and whether the log-probs came from the cache.
    """
    am = compute_logprobs(model_pt, manifest, cache_dir, max_utterances)
    rows, refs = am.rows, am.rows["text"].tolist()
    audio_s = float(rows["duration"].sum())
    tok = Tokenizer(search.tokens)
    greedy, greedy_s = _timed(lambda lp: greedy_decode(lp, tok), am.logprobs)
    beam, beam_s = _timed(search.decode, am.logprobs)
    hyps = {"greedy": greedy, "beam_lm": beam}
    if charlm is not None:
        hyps["beam_charlm"], charlm_s = _timed(charlm.decode, am.logprobs)
    rates = {k: corpus_rates(refs, h) for k, h in hyps.items()}
    table = {"utt_id": rows["utt_id"], "duration": rows["duration"].round(3), "reference": refs,
             "greedy": greedy, "beam": beam,
             "greedy_word_errors": [word_errors(r, h).errors for r, h in zip(refs, greedy)],
             "beam_word_errors": [word_errors(r, h).errors for r, h in zip(refs, beam)],
             "beam_char_errors": [char_errors(r, h).errors for r, h in zip(refs, beam)]}
    if charlm is not None:
        table["charlm"] = hyps["beam_charlm"]
        table["charlm_word_errors"] = [word_errors(r, h).errors for r, h in zip(refs, hyps["beam_charlm"])]
    pd.DataFrame(table).to_csv(out_dir / f"{split}_recogs.tsv", sep="\t", index=False)
    for setting, h in hyps.items():
        utts = list(zip(rows["utt_id"], refs, h))
        write_recogs(out_dir / f"recogs-{split}-{setting}.txt", utts)
        write_errs(out_dir / f"errs-{split}-{setting}.txt", utts, setting)
    write_wer_summary(out_dir / f"wer-summary-{split}.txt", {k: r["wer"] for k, r in rates.items()})
    ids = [trn_id(str(spk), str(u)) for spk, u in zip(rows["speaker_id"], rows["utt_id"])]
    write_trn(out_dir / f"ref-{split}.trn", zip(ids, refs))
    for setting, h in hyps.items():
        write_trn(out_dir / f"hyp-{split}-{setting}.trn", zip(ids, h))
        write_result(out_dir / f"result-{split}-{setting}.txt", zip(ids, refs, h), setting)
    bins = {k: wer_by_duration(rows["duration"].tolist(), refs, h, duration_bins) for k, h in hyps.items()}
    by_duration = [{"split": split, "bin": g["bin"], "from_s": g["from_s"], "utterances": g["utterances"],
                    "words": g["words"], "greedy_wer": _pct(g["wer"]), "beam_wer": _pct(b["wer"])}
                   for g, b in zip(bins["greedy"], bins["beam_lm"]) if g["utterances"]]
    g, b = rates["greedy"], rates["beam_lm"]
    metrics = {
        "utterances": len(refs), "audio_seconds": round(audio_s, 2), "words": b["words"],
        "greedy_wer": round(g["wer"], 4), "greedy_cer": round(g["cer"], 4),
        "beam_wer": round(b["wer"], 4), "beam_cer": round(b["cer"], 4),
        **{f"{k}_{op}": r[op] for k, r in (("greedy", g), ("beam", b))
           for op in ("substitutions", "deletions", "insertions")},
        # real-time factors: compute seconds per audio second (the acoustic model's from the
        # log-prob cache's record when it served this split; None: a cache written before
        # compute times were recorded)
        "rtf_acoustic": am.seconds / audio_s if am.seconds else None, "rtf_greedy_decoder": greedy_s / audio_s,
        "rtf_beam_decoder": beam_s / audio_s}
    if charlm is not None:
        c = rates["beam_charlm"]
        metrics.update({"charlm_wer": round(c["wer"], 4), "charlm_cer": round(c["cer"], 4),
                        **{f"charlm_{op}": c[op] for op in ("substitutions", "deletions", "insertions")},
                        "rtf_charlm_decoder": charlm_s / audio_s})
    return metrics, by_duration, am.cached

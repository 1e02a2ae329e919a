"""Stage 'evaluate': greedy and tuned beam+LM decoding of every test split.

Per split: WER/CER with substitution/deletion/insertion counts, real-time factors of the
acoustic model and of each decoder (measured separately), per-utterance results
(``<split>_recogs.tsv`` and icefall-style ``recogs-``/``errs-``/``wer-summary-`` files),
and WER by utterance duration (a DVC plot).
"""

import json
import time
from pathlib import Path

import pandas as pd

from asrflow.pipeline.config import eval_splits
from asrflow.decode.beam import BeamConfig, BeamSearch, compute_logprobs, greedy_decode
from asrflow.scoring.metrics import char_errors, corpus_rates, word_errors
from asrflow.scoring.results import wer_by_duration, write_errs, write_recogs, write_wer_summary
from asrflow.pipeline.stagekit import Context, main, write_csv
from asrflow.text.vocab import Tokenizer
from asrflow.train.loop import checkpoint_vocab

SETTINGS = ("greedy", "beam_lm")  # decoding settings, as named in the result files


def add_args(p):
    p.add_argument("--manifests", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--lm", required=True)
    p.add_argument("--tune", required=True, help="tuning directory holding best.json")
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True, help="per-utterance results directory")
    p.add_argument("--metrics", required=True)
    p.add_argument("--plots", required=True, help="WER-by-duration CSV for DVC plots")


def timed(fn, items):
    t0 = time.perf_counter()
    out = [fn(x) for x in items]
    return out, time.perf_counter() - t0


def run(ctx: Context) -> dict:
    a, ev = ctx.args, ctx.params["evaluate"]
    model = f"{a.model}/model.pt"
    best = json.loads(Path(a.tune, "best.json").read_text())
    tokens = checkpoint_vocab(model)
    tok = Tokenizer(tokens)
    search = BeamSearch(tokens, a.lm, BeamConfig(**ctx.params["decode"]))
    search.set_weights(best["alpha"], best["beta"])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = eval_splits(ctx.params, ctx.dataset)
    metrics: dict = {"splits": splits, "alpha": best["alpha"], "beta": best["beta"]}
    by_duration = []
    for split in splits:
        am = compute_logprobs(model, f"{a.manifests}/{split}.parquet", a.cache, ev["max_utterances"])
        rows, refs = am.rows, am.rows["text"].tolist()
        audio_s = float(rows["duration"].sum())
        greedy, greedy_s = timed(lambda lp: greedy_decode(lp, tok), am.logprobs)
        beam, beam_s = timed(search.decode, am.logprobs)
        hyps = {"greedy": greedy, "beam_lm": beam}
        rates = {k: corpus_rates(refs, h) for k, h in hyps.items()}
        pd.DataFrame({"utt_id": rows["utt_id"], "duration": rows["duration"].round(3), "reference": refs,
                      "greedy": greedy, "beam": beam,
                      "greedy_word_errors": [word_errors(r, h).errors for r, h in zip(refs, greedy)],
                      "beam_word_errors": [word_errors(r, h).errors for r, h in zip(refs, beam)],
                      "beam_char_errors": [char_errors(r, h).errors for r, h in zip(refs, beam)]}
                     ).to_csv(out / f"{split}_recogs.tsv", sep="\t", index=False)
        for setting, h in hyps.items():
            utts = list(zip(rows["utt_id"], refs, h))
            write_recogs(out / f"recogs-{split}-{setting}.txt", utts)
            write_errs(out / f"errs-{split}-{setting}.txt", utts, setting)
        write_wer_summary(out / f"wer-summary-{split}.txt", {k: r["wer"] for k, r in rates.items()})
        bins = {k: wer_by_duration(rows["duration"].tolist(), refs, h, ev["duration_bins"]) for k, h in hyps.items()}
        for g, b in zip(bins["greedy"], bins["beam_lm"]):
            by_duration.append({"split": split, "bin": g["bin"], "utterances": g["utterances"], "words": g["words"],
                                "greedy_wer": _pct(g["wer"]), "beam_wer": _pct(b["wer"])})
        g, b = rates["greedy"], rates["beam_lm"]
        metrics[split] = {
            "utterances": len(refs), "audio_seconds": round(audio_s, 2), "words": b["words"],
            "greedy_wer": round(g["wer"], 4), "greedy_cer": round(g["cer"], 4),
            "beam_wer": round(b["wer"], 4), "beam_cer": round(b["cer"], 4),
            **{f"{k}_{op}": r[op] for k, r in (("greedy", g), ("beam", b))
               for op in ("substitutions", "deletions", "insertions")},
            # real-time factors: compute seconds per audio second (the acoustic model's from the
            # log-prob cache's record when it served this split)
            # (None: served by a cache written before compute times were recorded)
            "rtf_acoustic": am.seconds / audio_s if am.seconds else None, "rtf_greedy_decoder": greedy_s / audio_s,
            "rtf_beam_decoder": beam_s / audio_s}
        ctx.log(f"{split}: greedy WER {g['wer']:.2f}% CER {g['cer']:.2f}% | beam+LM WER {b['wer']:.2f}% "
                f"CER {b['cer']:.2f}% ({len(refs)} utterances, {audio_s / 60:.1f} min); RTF acoustic model "
                f"{metrics[split]['rtf_acoustic'] or 0:.3g}{' (cached)' if am.cached else ''}, beam decoder "
                f"{metrics[split]['rtf_beam_decoder']:.3g}")
        ctx.tracker.log_metrics({f"{split}_{k}": v for k, v in metrics[split].items()})
    write_csv(Path(a.plots), by_duration)
    for f in sorted(out.iterdir()):
        ctx.tracker.log_artifact(f)
    return metrics


def _pct(x):
    return "" if x is None else round(x, 4)


if __name__ == "__main__":
    raise SystemExit(main("evaluate", add_args, run))

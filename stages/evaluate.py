"""Stage 'evaluate': greedy and tuned beam+LM decoding of every test split.

Per split: WER/CER with substitution/deletion/insertion counts, real-time factors of the
acoustic model and of each decoder (measured separately), per-utterance results
(``<split>_recogs.tsv``, icefall-style ``recogs-``/``errs-``/``wer-summary-`` files and
sclite-style ``ref-``/``hyp-`` trn files with a per-speaker ``result-`` table), and WER by
utterance duration (a DVC plot; bins without utterances left out).
"""

import dataclasses
import json
from pathlib import Path

from asrflow.common.files import write_csv
from asrflow.decode.beam import BeamConfig, BeamSearch
from asrflow.evaluate.splits import evaluate_split
from asrflow.models.checkpoint import checkpoint_vocab
from asrflow.pipeline.config import eval_splits
from asrflow.pipeline.stagekit import Context, main


def add_args(p):
    p.add_argument("--manifests", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--lm", required=True)
    p.add_argument("--tune", required=True, help="tuning directory holding best.json")
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True, help="per-utterance results directory")
    p.add_argument("--metrics", required=True)
    p.add_argument("--plots", required=True, help="WER-by-duration CSV for DVC plots")


def run(ctx: Context) -> dict:
    a, ev = ctx.args, ctx.params["evaluate"]
    model = f"{a.model}/model.pt"
    best = json.loads(Path(a.tune, "best.json").read_text())
    # params' decode block in the mode tune chose it for (lexicon-free for a character language)
    tokens, decode = checkpoint_vocab(model), BeamConfig.from_params({**ctx.params["decode"], "mode": best["mode"]})
    search = BeamSearch(tokens, a.lm, decode)
    search.set_weights(best["alpha"], best["beta"])
    charlm = None
    if "lexicon_free" in best:  # tuned beside the headline (see the tune stage)
        charlm = BeamSearch(tokens, a.lm, dataclasses.replace(decode, mode="lexicon_free"))
        charlm.set_weights(best["lexicon_free"]["alpha"], best["lexicon_free"]["beta"])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = eval_splits(ctx.params, ctx.dataset)
    metrics: dict = {"splits": splits, "alpha": best["alpha"], "beta": best["beta"]}
    by_duration = []
    for split in splits:
        m, rows, cached = evaluate_split(split, model, f"{a.manifests}/{split}.parquet", a.cache, search, out,
                                         ev["max_utterances"], ev["duration_bins"], charlm)
        metrics[split] = m
        ctx.tracker.log_dataset(f"{a.manifests}/{split}.parquet", split)
        # the parent run compares invocations by these: per split and decoder
        ctx.tracker.log_headline({f"{split}_{k}": v for k, v in m.items() if k.endswith(("_wer", "_cer"))})
        by_duration += rows
        ctx.log(f"{split}: greedy WER {m['greedy_wer']:.2f}% CER {m['greedy_cer']:.2f}% | beam+LM WER "
                f"{m['beam_wer']:.2f}% CER {m['beam_cer']:.2f}% ({m['utterances']} utterances, "
                f"{m['audio_seconds'] / 60:.1f} min); RTF acoustic model {m['rtf_acoustic'] or 0:.3g}"
                f"{' (cached)' if cached else ''}, beam decoder {m['rtf_beam_decoder']:.3g}")
        ctx.tracker.log_metrics({f"{split}_{k}": v for k, v in m.items()})
    write_csv(Path(a.plots), by_duration)
    for f in sorted(out.iterdir()):
        ctx.tracker.log_artifact(f)
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("evaluate", add_args, run))

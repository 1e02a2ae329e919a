"""Stage 'evaluate': greedy and tuned beam+LM decoding of every test split; WER and CER."""

import json
from pathlib import Path

import pandas as pd

from asrflow.config import eval_splits
from asrflow.decode import BeamConfig, BeamSearch, compute_logprobs, greedy_decode
from asrflow.metrics import char_errors, corpus_rates, word_errors
from asrflow.stagekit import Context, main
from asrflow.text import Tokenizer
from asrflow.train import checkpoint_vocab


def add_args(p):
    p.add_argument("--manifests", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--lm", required=True)
    p.add_argument("--tune", required=True, help="tuning directory holding best.json")
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True, help="per-utterance results directory")
    p.add_argument("--metrics", required=True)


def run(ctx: Context) -> dict:
    a = ctx.args
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
    for split in splits:
        logprobs, rows, _ = compute_logprobs(model, f"{a.manifests}/{split}.parquet", a.cache,
                                             ctx.params["evaluate"]["max_utterances"])
        refs = rows["text"].tolist()
        greedy = [greedy_decode(lp, tok) for lp in logprobs]
        beam = [search.decode(lp) for lp in logprobs]
        g, b = corpus_rates(refs, greedy), corpus_rates(refs, beam)
        pd.DataFrame({"utt_id": rows["utt_id"], "reference": refs, "greedy": greedy, "beam": beam,
                      "beam_word_errors": [word_errors(r, h).errors for r, h in zip(refs, beam)],
                      "beam_char_errors": [char_errors(r, h).errors for r, h in zip(refs, beam)]}
                     ).to_csv(out / f"{split}_recogs.tsv", sep="\t", index=False)
        metrics[split] = {"utterances": len(refs), "greedy_wer": round(g["wer"], 4), "greedy_cer": round(g["cer"], 4),
                          "beam_wer": round(b["wer"], 4), "beam_cer": round(b["cer"], 4)}
        ctx.log(f"{split}: greedy WER {g['wer']:.2f}% CER {g['cer']:.2f}% | beam+LM WER {b['wer']:.2f}% "
                f"CER {b['cer']:.2f}% ({len(refs)} utterances)")
        ctx.tracker.log_metrics({f"{split}_{k}": v for k, v in metrics[split].items()})
        ctx.tracker.log_artifact(out / f"{split}_recogs.tsv")
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("evaluate", add_args, run))

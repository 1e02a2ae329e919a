"""Stage 'lm': KenLM n-grams over the LM text (word LM + lexicon, optional character LM),
with their perplexity and the out-of-vocabulary words of dev and every test split."""

from pathlib import Path

from asrflow.data.manifest import read_manifest
from asrflow.pipeline.config import eval_splits
from asrflow.pipeline.stagekit import Context, main
from asrflow.text.lm import LMConfig, build_lm, find_corpora, lm_text, oov_stats, perplexity, read_lexicon_words
from asrflow.text.vocab import Tokenizer, read_vocab


def add_args(p):
    p.add_argument("--archives", required=True, help="the download stage's directory (holds the LM text)")
    p.add_argument("--manifests", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--out", required=True, help="LM directory (lm.arpa, lm.bin, lexicon.txt[, char.arpa, char.bin])")
    p.add_argument("--metrics", required=True)


def run(ctx: Context) -> dict:
    a, cfg = ctx.args, LMConfig.from_params(ctx.params["lm"])
    language = ctx.params["datasets"][ctx.dataset]["language"]
    words = (lambda t: " ".join(t)) if language == "zh" else (lambda t: t)  # zh: the LM's words are characters
    corpora = find_corpora(Path(a.archives))
    if not corpora and "corpus" in cfg.sources:
        ctx.log(f"no LM corpus in {a.archives}; using the other sources only")
    train = read_manifest(f"{a.manifests}/train.parquet")["text"]
    tok = Tokenizer(read_vocab(a.vocab))  # a subword model's lexicon is spelled in its pieces
    if tok.subword and cfg.char_order:
        ctx.log("subword units: no character LM (lm.char_order is for character models)")
    metrics = build_lm(lm_text(cfg, corpora, train if "transcripts" in cfg.sources else []), tok.alphabet, a.out, cfg,
                       language, tok.spell if tok.subword else None)
    ctx.lineage.update({k: metrics.pop(k) for k in list(metrics) if k.endswith("_seconds")})  # timings
    out = Path(a.out)
    lexicon, heard = read_lexicon_words(out / "lexicon.txt"), {w for t in train for w in words(t).split()}
    for split in ["dev", *eval_splits(ctx.params, ctx.dataset)]:
        raw = read_manifest(f"{a.manifests}/{split}.parquet")["text"].tolist()
        texts = [words(t) for t in raw]
        metrics.update({f"{split}_{k}": v for k, v in perplexity(out / "lm.bin", texts).items()})
        # words the lexicon cannot spell (what a lexicon decoder must get wrong) and words no
        # training transcript has
        metrics.update({f"{split}_{k}": v for k, v in oov_stats(texts, lexicon).items() if k != "oov_rate"})
        metrics[f"{split}_train_oov_rate"] = oov_stats(texts, heard)["oov_rate"]
        if cfg.char_order and not tok.subword:
            metrics.update({f"char_{split}_{k}": v
                            for k, v in perplexity(out / "char.bin", raw, chars=True).items()})
    ctx.log(f"{cfg.order}-gram over {metrics['sentences']} sentences, {metrics['vocabulary']} words kept "
            f"({metrics['unk_tokens']} tokens mapped to <unk>): {metrics['ngrams']} n-grams, "
            f"{cfg.binary_type} binary {metrics['binary_mb']} MB; dev perplexity {metrics['dev_perplexity']} "
            f"(OOV {metrics['dev_oov_rate']}%)")
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("lm", add_args, run))

"""Stage 'lm': KenLM n-grams over the LM text (word LM + lexicon, optional character LM),
with their perplexity on the dev transcripts."""

from pathlib import Path

from asrflow.text.lm import LMConfig, build_lm, corpus_lines, find_corpus, perplexity
from asrflow.data.manifest import read_manifest
from asrflow.pipeline.stagekit import Context, main
from asrflow.text.vocab import SPACE, BLANK, read_vocab


def add_args(p):
    p.add_argument("--archives", required=True, help="the download stage's directory (holds the LM text)")
    p.add_argument("--manifests", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--out", required=True, help="LM directory (lm.arpa, lm.bin, lexicon.txt[, char.arpa, char.bin])")
    p.add_argument("--metrics", required=True)


def lm_text(ctx: Context, cfg: LMConfig):
    """The LM's source lines, streamed: the dataset's LM corpus and/or the train transcripts."""
    if "corpus" in cfg.sources:
        corpus = find_corpus(Path(ctx.args.archives))
        if corpus is None:
            ctx.log(f"no LM corpus in {ctx.args.archives}; using the other sources only")
        else:
            yield from corpus_lines(corpus)
    if "transcripts" in cfg.sources:
        yield from read_manifest(f"{ctx.args.manifests}/train.parquet")["text"]


def run(ctx: Context) -> dict:
    cfg = LMConfig.from_params(ctx.params["lm"])
    alphabet = set(read_vocab(ctx.args.vocab)) - {BLANK, SPACE}
    metrics = build_lm(lm_text(ctx, cfg), alphabet, ctx.args.out, cfg)
    out = Path(ctx.args.out)
    dev = read_manifest(f"{ctx.args.manifests}/dev.parquet")["text"].tolist()
    metrics.update({f"dev_{k}": v for k, v in perplexity(out / "lm.bin", dev).items()})
    if cfg.char_order:
        metrics.update({f"char_dev_{k}": v for k, v in perplexity(out / "char.bin", dev, chars=True).items()})
    ctx.log(f"{cfg.order}-gram over {metrics['sentences']} sentences, {metrics['vocabulary']} words kept "
            f"({metrics['unk_tokens']} tokens mapped to <unk>): {metrics['ngrams']} n-grams, "
            f"{cfg.binary_type} binary {metrics['binary_mb']} MB; dev perplexity {metrics['dev_perplexity']} "
            f"(OOV {metrics['dev_oov_rate']}%)")
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("lm", add_args, run))

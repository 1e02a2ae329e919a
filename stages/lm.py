"""Stage 'lm': KenLM n-grams over the LM text (word LM + lexicon, optional character LM),
with their perplexity on the dev transcripts."""

from pathlib import Path

from asrflow.data.manifest import read_manifest
from asrflow.pipeline.stagekit import Context, main
from asrflow.text.lm import LMConfig, build_lm, find_corpus, lm_text, perplexity
from asrflow.text.vocab import BLANK, SPACE, read_vocab


def add_args(p):
    p.add_argument("--archives", required=True, help="the download stage's directory (holds the LM text)")
    p.add_argument("--manifests", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--out", required=True, help="LM directory (lm.arpa, lm.bin, lexicon.txt[, char.arpa, char.bin])")
    p.add_argument("--metrics", required=True)


def run(ctx: Context) -> dict:
    a, cfg = ctx.args, LMConfig.from_params(ctx.params["lm"])
    corpus = find_corpus(Path(a.archives))
    if corpus is None and "corpus" in cfg.sources:
        ctx.log(f"no LM corpus in {a.archives}; using the other sources only")
    transcripts = read_manifest(f"{a.manifests}/train.parquet")["text"] if "transcripts" in cfg.sources else []
    alphabet = set(read_vocab(a.vocab)) - {BLANK, SPACE}
    metrics = build_lm(lm_text(cfg, corpus, transcripts), alphabet, a.out, cfg)
    out = Path(a.out)
    dev = read_manifest(f"{a.manifests}/dev.parquet")["text"].tolist()
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

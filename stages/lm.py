"""Stage 'lm': a KenLM n-gram over the LM text, as ARPA, binary and lexicon."""

from pathlib import Path

from asrflow.lm import build_lm, corpus_lines, find_corpus, prepare_text
from asrflow.manifest import read_manifest
from asrflow.stagekit import Context, main
from asrflow.text import SPACE, BLANK, read_vocab


def add_args(p):
    p.add_argument("--archives", required=True, help="the download stage's directory (holds the LM text)")
    p.add_argument("--manifests", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--out", required=True, help="LM directory (lm.arpa, lm.bin, lexicon.txt)")
    p.add_argument("--metrics", required=True)


def run(ctx: Context) -> dict:
    cfg = ctx.params["lm"]
    alphabet = set(read_vocab(ctx.args.vocab)) - {BLANK, SPACE}
    lines: list[str] = []
    if "corpus" in cfg["sources"]:
        corpus = find_corpus(Path(ctx.args.archives))
        if corpus is None:
            ctx.log(f"no LM corpus in {ctx.args.archives}; using the other sources only")
        else:
            lines += list(corpus_lines(corpus))
    if "transcripts" in cfg["sources"]:
        lines += read_manifest(f"{ctx.args.manifests}/train.parquet")["text"].tolist()
    text, skipped = prepare_text(lines, alphabet)
    if not text:
        raise ValueError(f"no LM text left from sources {cfg['sources']} ({skipped} lines had characters "
                         "outside the vocabulary)")
    metrics = build_lm(text, ctx.args.out, cfg["order"], cfg["memory"], cfg["binary_type"])
    metrics["skipped_lines"] = skipped
    metrics["order"] = cfg["order"]
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("lm", add_args, run))

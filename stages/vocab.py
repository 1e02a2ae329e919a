"""Stage 'vocab': the vocabulary of the training transcripts (characters, or SentencePiece BPE
pieces with vocab.units: bpe), and the characters the scored splits need that it lacks (a
model cannot emit them: each is an error it cannot avoid)."""

from pathlib import Path

from asrflow.data.manifest import read_manifest
from asrflow.pipeline.stagekit import Context, main
from asrflow.text.vocab import Tokenizer, build_bpe_vocab, build_vocab, write_vocab


def add_args(p):
    p.add_argument("--manifests", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--out", required=True, help="vocabulary file, one token per line")


def run(ctx: Context) -> dict:
    rows, v = read_manifest(f"{ctx.args.manifests}/train.parquet"), ctx.params["vocab"]
    # every declared key is read, whatever the units (a bpe_size edit re-runs this stage alone under DVC)
    units, size, language = v["units"], v["bpe_size"], ctx.params["datasets"][ctx.dataset]["language"]
    tokens, dropped = build_vocab(rows["text"], v["min_count"])
    if dropped:
        ctx.log(f"dropped rare characters (count < min_count): {dropped}")
    metrics = {"tokens": len(tokens), "dropped_characters": len(dropped)}
    if units == "bpe":
        if language == "zh":
            raise SystemExit(f"params.yaml: 'vocab.units' is bpe, but {ctx.dataset} is Mandarin, whose units are "
                             "characters (no spaces to split words at): set vocab.units: char")
        chars = set(tokens[2:])
        try:
            tokens = build_bpe_vocab((t for t in rows["text"] if set(t.replace(" ", "")) <= chars), size)
        except ValueError as e:
            raise SystemExit(f"params.yaml: 'vocab.bpe_size' = {size}: {e}") from None
        metrics.update(tokens=len(tokens), subword_pieces=len(tokens) - 2)
        ctx.log(f"SentencePiece BPE: {len(tokens) - 2} pieces (vocab.bpe_size {size})")
    write_vocab(tokens, ctx.args.out)
    ctx.tracker.log_artifact(ctx.args.out)
    known = Tokenizer(tokens).alphabet
    for path in sorted(Path(ctx.args.manifests).glob("*.parquet")):
        if path.stem in ("train", "rejects"):
            continue
        text = "".join(read_manifest(path)["text"]).replace(" ", "")
        missing = sorted(set(text) - known)
        share = 100 * sum(text.count(c) for c in missing) / max(len(text), 1)
        metrics.update({f"{path.stem}_unknown_characters": len(missing),
                        f"{path.stem}_unknown_char_rate": round(share, 3)})
        if missing:
            ctx.log(f"warning: {path.stem} needs {len(missing)} characters the vocabulary lacks ({share:.2f}% of its "
                    f"characters; the model cannot emit them): {''.join(missing[:40])}")
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("vocab", add_args, run))

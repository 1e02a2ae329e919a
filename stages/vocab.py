"""Stage 'vocab': the character vocabulary of the training transcripts, and the characters the
scored splits need that it lacks (a model cannot emit them: each is an error it cannot avoid)."""

from pathlib import Path

from asrflow.data.manifest import read_manifest
from asrflow.pipeline.stagekit import Context, main
from asrflow.text.vocab import build_vocab, write_vocab


def add_args(p):
    p.add_argument("--manifests", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--out", required=True, help="vocabulary file, one token per line")


def run(ctx: Context) -> dict:
    rows = read_manifest(f"{ctx.args.manifests}/train.parquet")
    tokens, dropped = build_vocab(rows["text"], ctx.params["vocab"]["min_count"])
    write_vocab(tokens, ctx.args.out)
    if dropped:
        ctx.log(f"dropped rare characters (count < min_count): {dropped}")
    ctx.tracker.log_artifact(ctx.args.out)
    metrics = {"tokens": len(tokens), "dropped_characters": len(dropped)}
    for path in sorted(Path(ctx.args.manifests).glob("*.parquet")):
        if path.stem in ("train", "rejects"):
            continue
        text = "".join(read_manifest(path)["text"]).replace(" ", "")
        missing = sorted(set(text) - set(tokens))
        share = 100 * sum(text.count(c) for c in missing) / max(len(text), 1)
        metrics.update({f"{path.stem}_unknown_characters": len(missing),
                        f"{path.stem}_unknown_char_rate": round(share, 3)})
        if missing:
            ctx.log(f"warning: {path.stem} needs {len(missing)} characters the vocabulary lacks ({share:.2f}% of its "
                    f"characters; the model cannot emit them): {''.join(missing[:40])}")
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("vocab", add_args, run))

"""Stage 'vocab': the character vocabulary of the training transcripts."""

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
    return {"tokens": len(tokens), "dropped_characters": len(dropped)}


if __name__ == "__main__":
    raise SystemExit(main("vocab", add_args, run))

"""Stage 'download': LibriSpeech archives from the mirrors, or the synth corpus generated locally.

Either way the product is a directory of archives plus checksums.json; the manifest
stage extracts them.
"""

from asrflow.pipeline.config import dataset_splits
from asrflow.pipeline.stagekit import Context, main


def add_args(p):
    p.add_argument("--out", required=True, help="archive directory (the stage's product)")
    p.add_argument("--store", required=True, help="verified downloads and partial transfers, kept between runs")
    p.add_argument("--metrics", required=True)


def run(ctx: Context) -> dict:
    subsets = [s for v in dataset_splits(ctx.params, ctx.dataset).values() for s in v]
    cfg = ctx.params["download"][ctx.dataset]
    if ctx.dataset == "synth":
        from asrflow.data.synth import generate_corpus

        def progress(done: int, total: int) -> None:
            if done % 500 == 0 or done == total:
                ctx.log(f"synthesised {done}/{total}")
        missing = sorted(set(subsets) - set(cfg["utterances"]))
        if missing:
            raise ValueError(f"datasets.synth.splits names subsets {missing} that download.synth.utterances "
                             f"does not generate ({sorted(cfg['utterances'])})")
        return generate_corpus(cfg, ctx.params["seed"], ctx.args.out,
                               sample_rate=ctx.params["features"]["sample_rate"], workers=cfg["workers"],
                               progress=progress)
    from asrflow.data.librispeech import download_librispeech
    sizes = download_librispeech(subsets, cfg["mirrors"], ctx.args.store, ctx.args.out, lm_corpus=cfg["lm_corpus"],
                                 checksums=cfg["checksums"], timeout=cfg["timeout_s"], retries=cfg["retries"])
    return {"files": len(sizes), "gigabytes": round(sum(sizes.values()) / 1e9, 3)}


if __name__ == "__main__":
    raise SystemExit(main("download", add_args, run))

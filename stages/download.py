"""Stage 'download': the dataset's source makes its archive directory.

LibriSpeech and AISHELL-1 archives fetched from the mirrors and verified, the embedded
corpus generated here, a Common Voice archive you have linked and hashed, or, for a
corpus read where it lies (kaldi, nemo, folder, a Common Voice folder), source.json: its
path, how to read it and a fingerprint of its file listing. The manifest stage extracts
and lists from there.
"""

from pathlib import Path

from asrflow.common.files import write_json
from asrflow.data.sources import source_of
from asrflow.pipeline.stagekit import Context, main


def add_args(p):
    p.add_argument("--out", required=True, help="archive directory (the stage's product)")
    p.add_argument("--store", required=True, help="verified downloads and partial transfers, kept between runs")
    p.add_argument("--metrics", required=True)


def run(ctx: Context) -> dict:
    entry = ctx.params["datasets"][ctx.dataset]
    subsets = [s for v in entry["splits"].values() for s in v]
    out = Path(ctx.args.out)
    metrics = source_of(entry).fetch(entry, subsets, out, Path(ctx.args.store), seed=ctx.params["seed"],
                                     sample_rate=ctx.params["features"]["sample_rate"], log=ctx.log)
    # the entry the product was made from, beside it: which corpus, read how (the manifest stage's
    # language and resample included), for whoever holds the archives without this params.yaml
    write_json(out / "dataset.json", {"dataset": ctx.dataset, **entry})
    return metrics


if __name__ == "__main__":
    raise SystemExit(main("download", add_args, run))

"""Training throughput: full training steps, and whether the data loader keeps up with them.

    python bench/bench_train.py [--device cpu|cuda] [--config small|default] [--batches 16]
                                [--repeats 5] [--manifests data/synth/manifests] [--num-workers 0]

Everything runs on the batches the train stage would use: asrflow.train.batches.make_batches over
the train manifest's durations with train.batch_frames * features.hop_ms / 1000 seconds,
in the first epoch's (SortaGrad, shortest first) order; --batches of them are timed, taken
evenly spaced over that order so short and long batches are both represented (consecutive
timed batches rarely share a Parquet row group, as in the shuffled epochs after the first).

- train_audio_s_per_s: audio seconds (real, not padded) trained per second by full steps as
  the train stage runs them (asrflow.train.loop.TrainingRun, built from params.yaml as
  train.py builds it, its own dataset, batches and step): the DataLoader (UtteranceDataset + collate: samples read from the
  Parquet manifest's row groups -- a copy with manifest.audio_codec pcm16, a FLAC decode
  with flac --, log-mel, normalisation, padding) feeding forward, CTC loss, backward,
  gradient clipping, AdamW and scheduler steps. Dev evaluation and checkpoints, which the
  train stage's own train_audio_s_per_s includes, are not.
- padding_fraction: 1 - real audio / padded audio over all the epoch's batches, as train.py
  computes it (padding_fraction_timed: the same over the timed batches).
- loader_headroom: the loader's delivery rate (audio-s/s of batches the DataLoader produces,
  nothing else running) / the step's consumption rate (audio-s/s of forward + backward +
  optimizer step on the same batches already in memory), paired within each repeat;
  goal >= 3. Both rates are reported, with the DataLoader settings (train.py's by default:
  num_workers 0, so loading runs in the main process with the training run's torch threads,
  and does not overlap the step; serial_prediction_audio_s_per_s = 1 / (1/loader + 1/step)
  is what a full step should then reach, a check that nothing is counted twice or missed).
  full_pass_wait_fraction: the share of the full-step run spent waiting for the loader's
  next batch (with num_workers 0, all of the loading: the accelerator idles that long).
  With --num-workers > 0 loading overlaps the step, so the serial prediction no longer
  applies, and the loader's time includes starting its workers (once per DataLoader: per
  --batches batches here, per epoch in train.py).

Configs: 'default' is params.yaml's train block as the train stage uses it (~3.8 M
parameters); 'small' (the default here, so a CPU run takes a few minutes on 2 cores) swaps
in the tests' tiny model (tests/sizes.py TINY_MODEL) with the same batches. On CUDA the
forward pass runs under bf16 autocast when train.precision is bf16, as in train.py. Threads: train.threads, or every core (train.py's rule), set before
anything is timed; --threads overrides. One warm-up repeat is run and discarded; figures
are medians of --repeats. A repeat during which other processes used more than
--max-other-share of the machine's CPU (from /proc/stat less this process's own time) is
discarded and run again, at most --max-discarded times; the JSON lists what was discarded
and says "disturbed": true if a kept repeat was still above the limit. Prints one JSON
object as its last line and writes reports/bench/train.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from corpus import REPO, emit, median

from asrflow.common.progress import bar
from asrflow.features.logmel import FeatureConfig
from asrflow.models.families import count_parameters, selected
from asrflow.pipeline.config import load_params
from asrflow.train.batches import collate, epoch_batches
from asrflow.train.config import TrainConfig, TrainPaths
from asrflow.train.loop import TrainingRun

sys.path.insert(0, str(REPO / "tests"))
from sizes import TINY_MODEL  # noqa: E402  (the tests' tiny model: one place for both)


def busy_cpu_s() -> float | None:
    """CPU-seconds the whole machine has spent busy (Linux /proc/stat), None elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def pick(batches: list[list[int]], n: int) -> list[list[int]]:
    """``n`` batches evenly spaced over ``batches`` (all of them if there are no more than ``n``)."""
    if n >= len(batches):
        return list(batches)
    if n == 1:
        return [batches[len(batches) // 2]]
    return [batches[round(k * (len(batches) - 1) / (n - 1))] for k in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--config", choices=["small", "default"], default="small")
    ap.add_argument("--manifests", default=str(REPO / "data/synth/manifests"), help="holds train.parquet")
    ap.add_argument("--stats", default=None, help="default: stats.json beside the manifests directory")
    ap.add_argument("--vocab", default=None, help="default: vocab.txt beside the manifests directory")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--batches", type=int, default=16, help="batches timed (evenly spaced over the epoch)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup-repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = train.threads, or every core")
    ap.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (train.py: 0)")
    ap.add_argument("--max-other-share", type=float, default=0.05,
                    help="a repeat during which other processes used more of the machine's CPU than this is "
                         "discarded and run again (Linux; reported)")
    ap.add_argument("--max-discarded", type=int, default=10,
                    help="give up re-running disturbed repeats after this many")
    args = ap.parse_args()

    manifests = Path(args.manifests)
    train_manifest = manifests / "train.parquet"
    stats = Path(args.stats) if args.stats else manifests.parent / "stats.json"
    vocab = Path(args.vocab) if args.vocab else manifests.parent / "vocab.txt"
    missing = [str(p) for p in (train_manifest, manifests / "dev.parquet", stats, vocab) if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make run` first (or `snakemake -j2 "
                         "data/synth/manifests data/synth/stats.json data/synth/vocab.txt`), or point "
                         "--manifests/--stats/--vocab at another corpus's outputs")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")

    params = load_params(args.params)
    train_params = dict(params["train"], device=args.device)
    model_params = selected(params["model"])
    if args.config == "small":  # the tests' tiny DeepSpeech2
        model_params = {"family": "deepspeech2", "deepspeech2": {**params["model"]["deepspeech2"], **TINY_MODEL}}
    if args.threads:
        train_params["threads"] = args.threads
    cfg = TrainConfig.from_params(train_params)
    feat_cfg = FeatureConfig.from_params(params["features"])
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:  # nothing is written there: no checkpoints
        paths = TrainPaths(train_manifest, manifests / "dev.parquet", stats, vocab, Path(tmp), Path(tmp) / "curve.csv",
                           Path(tmp) / "checkpoints")
        # the train stage's run, set up as train.py sets it up: placement (threads, seeds, determinism),
        # the dataset (rows with out-of-vocabulary characters dropped), batches, model, optimiser, schedule
        run = TrainingRun(paths, cfg, model_params, feat_cfg, params["seed"], log=lambda msg: print(msg, flush=True))
    run.progress = bar(None, "bench", show=False)
    device, threads = run.where.device, torch.get_num_threads()
    use_cuda = device.type == "cuda"
    durations, batches = run.durations, run.batches
    padding_fraction = run.padding
    batch_seconds = cfg.batch_frames * feat_cfg.hop_ms / 1000
    timed = pick(epoch_batches(batches, 0, params["seed"], 0, 1), args.batches)
    audio_s = float(sum(durations[i] for b in timed for i in b))
    padded_timed = sum(max(durations[i] for i in b) * len(b) for b in timed)
    loader_kwargs = {"batch_sampler": timed, "collate_fn": collate, "num_workers": args.num_workers}
    model = run.model
    model.train()

    def sync() -> None:
        if use_cuda:
            torch.cuda.synchronize(device)

    def step(batch) -> None:
        run.step(*batch, epoch=0)

    print(f"{args.config} model ({count_parameters(model):,} parameters) on {device}, {threads} threads"
          f"{', bf16 autocast' if run.bf16 else ''}; {len(timed)} of {len(batches)} batches of <= "
          f"{batch_seconds:.0f} s ({audio_s:.0f} s of audio); DataLoader num_workers={args.num_workers}", flush=True)

    def loader_pass() -> tuple[float, list]:
        t = time.perf_counter()
        out = list(torch.utils.data.DataLoader(run.ds, **loader_kwargs))
        return time.perf_counter() - t, out

    def step_pass(in_memory: list) -> float:
        sync()
        t = time.perf_counter()
        for batch in in_memory:
            step(batch)
        sync()
        return time.perf_counter() - t

    def full_pass() -> tuple[float, float]:
        """As train.py's epoch loop: a new DataLoader, batches consumed as produced. Also returns
        the time spent waiting for the loader's next batch (all of the loading when num_workers=0)."""
        sync()
        t = time.perf_counter()
        waited = 0.0
        it = iter(torch.utils.data.DataLoader(run.ds, **loader_kwargs))
        while True:
            w = time.perf_counter()
            batch = next(it, None)
            waited += time.perf_counter() - w
            if batch is None:
                break
            step(batch)
        sync()
        return time.perf_counter() - t, waited

    load0 = os.getloadavg()[0]
    rates: dict[str, list[float]] = {"loader": [], "step": [], "full": []}
    headrooms, waits = [], []
    kept_cpu = kept_wall = 0.0  # this process's CPU-seconds and the wall time of the kept repeats
    foreign, discarded = [], []  # share of the machine's CPU other processes used during each repeat
    r = -1
    while len(rates["full"]) < args.repeats:
        r += 1
        busy, own, wall = busy_cpu_s(), own_cpu_s(), time.perf_counter()
        lw, in_memory = loader_pass()
        sw = step_pass(in_memory)
        del in_memory
        fw, waited = full_pass()
        other = None if busy is None else max(0.0, ((busy_cpu_s() - busy) - (own_cpu_s() - own))
                                                  / ((time.perf_counter() - wall) * (os.cpu_count() or 1)))
        tag = "warm-up" if r < args.warmup_repeats else f"repeat {len(rates['full']) + 1}"
        print(f"{tag}: loader {audio_s / lw:.0f} audio-s/s ({lw:.2f} s), step {audio_s / sw:.0f} ({sw:.2f} s), "
              f"full {audio_s / fw:.0f} ({fw:.2f} s); other processes' CPU share "
              f"{'n/a' if other is None else f'{other:.2f}'}", flush=True)
        if r < args.warmup_repeats:
            continue
        if other is not None and other > args.max_other_share and len(discarded) < args.max_discarded:
            discarded.append(round(other, 3))
            print(f"  discarded: other processes used {other:.0%} of the CPU; running it again", flush=True)
            continue
        rates["loader"].append(audio_s / lw)
        rates["step"].append(audio_s / sw)
        rates["full"].append(audio_s / fw)
        headrooms.append(sw / lw)  # (audio/lw) / (audio/sw), paired within the repeat
        waits.append(waited / fw)
        foreign.append(other)
        kept_cpu += own_cpu_s() - own
        kept_wall += time.perf_counter() - wall
    cpu_utilisation = kept_cpu / (kept_wall * threads)  # of the torch threads' cores, kept repeats
    med = {k: median(v) for k, v in rates.items()}
    serial = 1.0 / (1.0 / med["loader"] + 1.0 / med["step"])
    headroom = median(headrooms)
    emit("train", {
        "train_audio_s_per_s": round(med["full"], 1),
        "padding_fraction": round(padding_fraction, 4),
        "loader_headroom": round(headroom, 2),
        "loader_headroom_goal": 3,
        "loader_headroom_met": headroom >= 3,
        "loader_audio_s_per_s": round(med["loader"], 1),
        "step_audio_s_per_s": round(med["step"], 1),
        "serial_prediction_audio_s_per_s": round(serial, 1),
        "full_vs_serial_prediction": round(med["full"] / serial, 3),
        "full_pass_wait_fraction": round(median(waits), 3),
        "rate_spread": {k: round(max(v) / min(v), 2) for k, v in rates.items()},
        "padding_fraction_timed": round(1.0 - audio_s / padded_timed, 4),
        "dataloader": {"num_workers": args.num_workers, "batch_sampler": "make_batches, first-epoch order",
                       "collate_fn": "asrflow.train.batches.collate", "pin_memory": False, "prefetch_factor": None,
                       "persistent_workers": False, "loading_overlaps_step": args.num_workers > 0,
                       "worker_torch_threads": 1 if args.num_workers else None},
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if use_cuda else None,
        "precision": "bf16 autocast" if run.bf16 else "float32",
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "cores": os.cpu_count(), "torch": torch.__version__,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "config": args.config, "model_params": count_parameters(model),
        "model": model_params,
        "manifest": str(train_manifest.resolve().relative_to(REPO) if train_manifest.resolve().is_relative_to(REPO)
                        else train_manifest), "batch_seconds": batch_seconds, "batches_per_epoch": len(batches),
        "batches_timed": len(timed), "utterances_timed": sum(len(b) for b in timed),
        "audio_s_timed": round(audio_s, 1), "mean_utterance_s": round(float(sum(durations)) / len(durations), 2),
        "repeats": args.repeats, "warmup_repeats": args.warmup_repeats,
        "per_repeat_audio_s_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "cpu_utilisation": round(cpu_utilisation, 3),
        # above max_other_share in a kept repeat (max_discarded reached): the figures are disturbed
        "other_processes_cpu_share": None if None in foreign else [round(x, 3) for x in foreign],
        "max_other_share": args.max_other_share, "discarded_repeats_other_share": discarded,
        "disturbed": None if None in foreign else max(foreign) > args.max_other_share,
        "load_avg_1m_start": round(load0, 2), "load_avg_1m_end": round(os.getloadavg()[0], 2),
    })


if __name__ == "__main__":
    main()

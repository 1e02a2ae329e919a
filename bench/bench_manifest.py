"""Manifest stage speed and memory.

    python bench/bench_manifest.py [--files 3000] [--big 100000]

Both sides get the same files and the same cores: each baseline runs in a pool of as many
processes as the manifest stage uses (manifest.workers, 0 = all cores), files handed out
in chunks as the stage hands out its probes; runs alternate between the sides; medians.
Files are ~12 s (LibriSpeech's mean) spoken by espeak-ng, hard-linked, so every side reads
from the page cache: this compares CPU work.

- manifest_speedup_vs_soundfile_info: a careful user's duration pass (soundfile.info on
  every file: header only) / our manifest build with the default params (header probe and
  last-frame seek, JSONL + Parquet + rejects, and every utterance's audio written into the
  Parquet as manifest.audio_codec says, a write the baseline never does): below 1 means
  the stage costs more than reading the headers alone;
- manifest_speedup_vs_soundfile_info_without_audio_bytes: the same with
  manifest.audio_bytes false (what the probing and tables cost);
- manifest_speedup_vs_full_decode: decoding every file to count its samples (sf.read),
  on the same cores, / our build with the default params;
- manifest_peak_rss_mb_100k: peak resident memory (the stage process plus its probe
  workers, summed) building a 100,000-utterance manifest, corpus made of hard links to
  a few real files, default params (audio bytes embedded).

Prints one JSON object as its last line and writes reports/bench/manifest.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from corpus import REPO, emit, make_corpus, make_sources, median

from asrflow.models.frames import frame_geometry
from asrflow.pipeline.config import load_params
from asrflow.data.manifest import PROBE_CHUNK, ManifestConfig, write_manifests

import soundfile as sf


def _info_seconds(paths: list[str]) -> float:
    return sum(sf.info(p).duration for p in paths)


def _decode_seconds(paths: list[str]) -> float:
    total = 0.0
    for p in paths:
        wav, sr = sf.read(p, dtype="float32")
        total += len(wav) / sr
    return total


def baseline(raw: Path, per_chunk, workers: int) -> tuple[float, float]:
    """Wall seconds of ``per_chunk`` over every FLAC under ``raw`` in a pool of ``workers``
    (the stage's chunk size), and the audio seconds it found."""
    t0 = time.perf_counter()
    paths = sorted(str(p) for p in raw.rglob("*.flac"))
    chunks = [paths[i:i + PROBE_CHUNK] for i in range(0, len(paths), PROBE_CHUNK)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            found = sum(pool.map(per_chunk, chunks))
    else:
        found = sum(per_chunk(c) for c in chunks)
    return time.perf_counter() - t0, found


def ours(raw: Path, out: Path, cfg: ManifestConfig) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    m = write_manifests(raw, {"train": ["train"]}, out, cfg)
    return time.perf_counter() - t0, m


def tree_rss_mb(root_pid: int) -> float:
    """Resident memory of ``root_pid`` and all its descendants, summed (MB)."""
    parent, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    total, stack = 0, [root_pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack += [c for c, pp in parent.items() if pp == p]
    return total / 1e6


def peak_rss_build(raw: Path, out: Path) -> tuple[float, float, dict]:
    code = ("import json, sys; from asrflow.pipeline.config import load_params; "
            "from asrflow.data.manifest import ManifestConfig, write_manifests; "
            "from asrflow.models.frames import frame_geometry; "
            f"p = load_params({str(REPO / 'params.yaml')!r}); "
            f"m = write_manifests({str(raw)!r}, {{'train': ['train']}}, {str(out)!r}, "
            "ManifestConfig.from_params(p, frame_geometry(p['model']), 'synth')); print(json.dumps(m))")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    peak = [0.0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            time.sleep(0.05)
    t = threading.Thread(target=sample)
    t.start()
    stdout, _ = proc.communicate()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"manifest build failed ({proc.returncode})")
    import json
    return peak[0], time.perf_counter() - t0, json.loads(stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=3000, help="utterances for the speed comparison")
    ap.add_argument("--big", type=int, default=100_000, help="utterances for the memory figure")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = ManifestConfig.from_params(p := load_params(REPO / "params.yaml"), frame_geometry(p["model"]), "synth")
    with tempfile.TemporaryDirectory(prefix="asrflow-bench-manifest-", dir=REPO / "cache" if (REPO / "cache").is_dir() else None) as tmp:
        tmp = Path(tmp)
        long_src = make_sources(tmp / "src-long", 24, sentences_per_file=4)
        make_corpus(tmp / "speed", long_src, args.files)
        workers = cfg.workers or os.cpu_count() or 1
        times: dict[str, list[float]] = {"info": [], "decode": [], "ours": [], "lean": []}
        metrics: dict = {}
        lean = dataclasses.replace(cfg, audio_bytes=False)
        ours(tmp / "speed", tmp / "out", cfg)  # warm the page cache and imports for every side
        for _ in range(args.repeats):
            s, found = baseline(tmp / "speed", _info_seconds, workers)
            times["info"].append(s)
            s, _ = baseline(tmp / "speed", _decode_seconds, workers)
            times["decode"].append(s)
            s, metrics = ours(tmp / "speed", tmp / "out", cfg)
            times["ours"].append(s)
            s, _ = ours(tmp / "speed", tmp / "out", lean)
            times["lean"].append(s)
            print("  ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        med = {k: median(v) for k, v in times.items()}
        hours = metrics["train_hours"]
        shutil.rmtree(tmp / "speed")
        shutil.rmtree(tmp / "out")

        short_src = make_sources(tmp / "src-short", 16, sentences_per_file=1)
        make_corpus(tmp / "big", short_src, args.big)
        peak, big_s, big_m = peak_rss_build(tmp / "big", tmp / "big-out")
        parquet_gb = (tmp / "big-out" / "train.parquet").stat().st_size / 1e9
    result = {
        "manifest_speedup_vs_soundfile_info": round(med["info"] / med["ours"], 2),
        "manifest_speedup_vs_soundfile_info_without_audio_bytes": round(med["info"] / med["lean"], 2),
        "manifest_speedup_vs_full_decode": round(med["decode"] / med["ours"], 2),
        "manifest_speedup_vs_full_decode_without_audio_bytes": round(med["decode"] / med["lean"], 2),
        "utterances": args.files, "audio_hours": hours, "mean_duration_s": round(hours * 3600 / args.files, 2),
        "baseline_audio_hours": round(found / 3600, 3),
        "seconds_median": {k: round(v, 3) for k, v in med.items()},
        "workers_each_side": workers, "audio_codec": cfg.audio_codec, "audio_bytes_default": cfg.audio_bytes,
        "manifest_peak_rss_mb_100k": round(peak, 1), "goal_peak_rss_mb": 1024,
        "big_utterances": big_m["train_utterances"], "big_build_s": round(big_s, 1),
        "big_parquet_gb": round(parquet_gb, 2), "cores": os.cpu_count(), "repeats": args.repeats,
    }
    emit("manifest", result)


if __name__ == "__main__":
    main()

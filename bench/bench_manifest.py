"""Manifest stage speed and memory.

    python bench/bench_manifest.py [--files 3000] [--big 100000]

- manifest_speedup_vs_full_decode: our manifest build (header probe + last-frame seek
  on all cores, JSONL + Parquet + rejects, everything the stage does but embedding the
  audio) vs a naive loop decoding every file to get its duration, on the same files,
  alternating runs, medians. Files are ~12 s (LibriSpeech's mean) spoken by espeak-ng,
  hard-linked, so both sides read from the page cache: this compares CPU work.
- manifest_speedup_vs_full_decode_with_audio_bytes: the same with the stage's default
  params, which also copy every FLAC into the Parquet (a write the naive loop never does).
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
from pathlib import Path

from corpus import REPO, emit, make_corpus, make_sources, median

from asrflow.pipeline.config import load_params
from asrflow.data.manifest import ManifestConfig, write_manifests

import soundfile as sf


def naive_durations(raw: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for path in sorted(raw.rglob("*.flac")):
        wav, sr = sf.read(str(path), dtype="float32")
        _ = len(wav) / sr
        n += 1
    return time.perf_counter() - t0, n


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
            f"m = write_manifests({str(raw)!r}, {{'train': ['train']}}, {str(out)!r}, "
            f"ManifestConfig.from_params(load_params({str(REPO / 'params.yaml')!r}))); print(json.dumps(m))")
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
    cfg = ManifestConfig.from_params(load_params(REPO / "params.yaml"))
    with tempfile.TemporaryDirectory(prefix="asrflow-bench-manifest-", dir=REPO / "cache" if (REPO / "cache").is_dir() else None) as tmp:
        tmp = Path(tmp)
        long_src = make_sources(tmp / "src-long", 24, sentences_per_file=4)
        make_corpus(tmp / "speed", long_src, args.files)
        naive_s, ours_s, bytes_s, metrics = [], [], [], {}
        lean = dataclasses.replace(cfg, audio_bytes=False)
        ours(tmp / "speed", tmp / "out", cfg)  # warm the page cache and imports for both sides
        for _ in range(args.repeats):
            s, n = naive_durations(tmp / "speed")
            naive_s.append(s)
            s, metrics = ours(tmp / "speed", tmp / "out", lean)
            ours_s.append(s)
            s, metrics = ours(tmp / "speed", tmp / "out", cfg)
            bytes_s.append(s)
        hours = metrics["train_hours"]
        shutil.rmtree(tmp / "speed")
        shutil.rmtree(tmp / "out")

        short_src = make_sources(tmp / "src-short", 16, sentences_per_file=1)
        make_corpus(tmp / "big", short_src, args.big)
        peak, big_s, big_m = peak_rss_build(tmp / "big", tmp / "big-out")
        parquet_gb = (tmp / "big-out" / "train.parquet").stat().st_size / 1e9
    result = {
        "manifest_speedup_vs_full_decode": round(median(naive_s) / median(ours_s), 2),
        "goal_speedup": 20,
        "utterances": args.files, "audio_hours": hours, "mean_duration_s": round(hours * 3600 / args.files, 2),
        "manifest_speedup_vs_full_decode_with_audio_bytes": round(median(naive_s) / median(bytes_s), 2),
        "full_decode_s_median": round(median(naive_s), 3), "manifest_build_s_median": round(median(ours_s), 3),
        "manifest_build_with_audio_bytes_s_median": round(median(bytes_s), 3),
        "manifest_workers": cfg.workers or os.cpu_count(), "audio_bytes_in_100k_build": cfg.audio_bytes,
        "manifest_peak_rss_mb_100k": round(peak, 1), "goal_peak_rss_mb": 1024,
        "big_utterances": big_m["train_utterances"], "big_build_s": round(big_s, 1),
        "big_parquet_gb": round(parquet_gb, 2), "cores": os.cpu_count(), "repeats": args.repeats,
    }
    emit("manifest", result)


if __name__ == "__main__":
    main()

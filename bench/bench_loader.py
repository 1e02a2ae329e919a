"""Audio loading: decoded waveforms from the Parquet shards vs opening each FLAC file.

    python bench/bench_loader.py [--files 1500] [--repeats 3]

- parquet_vs_files_speedup: audio-seconds per second delivered as decoded float32
  waveforms, reading the manifest's Parquet as the manifest stage writes it by default
  (manifest.audio_codec pcm16: samples decoded once at manifest time, row groups read
  whole, asrflow.data.manifest.ManifestAudio) vs opening the same utterances' FLAC files one by
  one (asrflow.data.audio.load_audio on each path), same order (the manifest's), cold page
  cache for both (every file evicted with posix_fadvise(DONTNEED) before each pass).
- parquet_flac_vs_files_speedup: the same with manifest.audio_codec flac (the FLAC bytes
  in the Parquet, decoded at every read): what the Parquet layout alone is worth.
- *_warm: the same with everything already in the page cache.
- parquet_vs_files_read_speedup_cold: the I/O part alone: encoded bytes per second,
  cold cache, Parquet (flac) row groups vs opening and reading each file (no decoding).
- pcm16_vs_flac_size: the pcm16 Parquet's size over the flac one's (the disk it costs).

The corpus is distinct files (copies, not links) of ~12 s spoken by espeak-ng. Runs
alternate between the readers; medians. Prints one JSON object as its last line and
writes reports/bench/loader.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from corpus import REPO, emit, evict, make_corpus, make_sources, median

from asrflow.models.frames import frame_geometry
from asrflow.pipeline.config import load_params
from asrflow.data.audio import load_audio
from asrflow.data.manifest import ManifestAudio, ManifestConfig, read_manifest, write_manifests


def from_files(paths: list[str], sr: int) -> float:
    return sum(len(load_audio(p, sr)) for p in paths) / sr


def from_parquet(path: Path, sr: int) -> float:
    audio = ManifestAudio(path, sr)
    return sum(len(audio[i]) for i in range(len(audio))) / sr


def bytes_from_files(paths: list[str], _sr: int) -> float:
    n = 0
    for p in paths:
        with open(p, "rb") as f:
            n += len(f.read())
    return n


def bytes_from_parquet(path: Path, _sr: int) -> float:
    audio = ManifestAudio(path, _sr)
    return sum(len(audio.encoded(i)) for i in range(len(audio)))


def timed(fn, *args) -> tuple[float, float]:
    t0 = time.perf_counter()
    seconds = fn(*args)
    return seconds, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = ManifestConfig.from_params(p := load_params(REPO / "params.yaml"), frame_geometry(p["model"]), "synth")
    sr = cfg.sample_rate
    readers = ("files", "parquet", "parquet_flac")
    with tempfile.TemporaryDirectory(prefix="asrflow-bench-loader-") as tmp:
        tmp = Path(tmp)
        make_corpus(tmp / "raw", make_sources(tmp / "src", 24, sentences_per_file=4), args.files, link=False)
        shards = {}
        for name, codec in (("parquet", "pcm16"), ("parquet_flac", "flac")):
            write_manifests(tmp / "raw", {"train": ["train"]}, tmp / name,
                            dataclasses.replace(cfg, audio_bytes=True, audio_codec=codec))
            shards[name] = tmp / name / "train.parquet"
        paths = read_manifest(shards["parquet"])["audio_filepath"].tolist()
        everything = paths + [str(p) for p in shards.values()]

        def one(kind: str) -> tuple[float, float]:
            return timed(from_files, paths, sr) if kind == "files" else timed(from_parquet, shards[kind], sr)
        rates: dict[str, list[float]] = {f"{k}_{c}": [] for k in readers for c in ("cold", "warm")}
        audio_s = 0.0
        for _ in range(args.repeats):
            for kind in readers:
                evict(everything)
                audio_s, wall = one(kind)
                rates[f"{kind}_cold"].append(audio_s / wall)
        for _ in range(args.repeats):
            for kind in readers:
                audio_s, wall = one(kind)
                rates[f"{kind}_warm"].append(audio_s / wall)
        reads: dict[str, list[float]] = {"files": [], "parquet": []}
        for _ in range(args.repeats):
            for kind, fn, arg in (("files", bytes_from_files, paths),
                                  ("parquet", bytes_from_parquet, shards["parquet_flac"])):
                evict(everything)
                n, wall = timed(fn, arg, sr)
                reads[kind].append(n / wall / 1e6)
        mb = {k: p.stat().st_size / 1e6 for k, p in shards.items()}
    med = {k: median(v) for k, v in rates.items()}
    result = {
        "parquet_vs_files_speedup": round(med["parquet_cold"] / med["files_cold"], 2),
        "goal_speedup": 2, "parquet_codec": "pcm16",
        "parquet_flac_vs_files_speedup": round(med["parquet_flac_cold"] / med["files_cold"], 2),
        "parquet_vs_files_speedup_warm": round(med["parquet_warm"] / med["files_warm"], 2),
        "parquet_flac_vs_files_speedup_warm": round(med["parquet_flac_warm"] / med["files_warm"], 2),
        **{f"{k}_audio_s_per_s": round(v, 1) for k, v in sorted(med.items())},
        "parquet_vs_files_read_speedup_cold": round(median(reads["parquet"]) / median(reads["files"]), 2),
        "parquet_read_mb_per_s_cold": round(median(reads["parquet"]), 1),
        "files_read_mb_per_s_cold": round(median(reads["files"]), 1),
        "pcm16_vs_flac_size": round(mb["parquet"] / mb["parquet_flac"], 2),
        "utterances": args.files, "audio_hours": round(audio_s / 3600, 3),
        "parquet_mb": round(mb["parquet"], 1), "parquet_flac_mb": round(mb["parquet_flac"], 1),
        "row_group_rows": cfg.row_group_rows, "repeats": args.repeats, "cores": os.cpu_count(),
    }
    emit("loader", result)


if __name__ == "__main__":
    main()

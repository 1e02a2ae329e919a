"""Manifest stage throughput on an AISHELL-1-layout and a Common Voice-layout corpus.

    python bench/bench_sources.py [--files 1500] [--repeats 3]

- AISHELL-1 layout: 16 kHz WAVs in ``data_aishell/wav/train/<speaker>/`` and the transcript
  file, Mandarin text (espeak-ng's cmn voice), read by the aishell source's lister; the
  manifest stage probes each header and stores its samples as pcm16 (the default params).
- Common Voice layout: 48 kHz MP3 clips in ``clips/`` and ``train.tsv``, read by the
  common_voice source with ``resample: true``: every clip is decoded and resampled once
  into the Parquet's pcm16 audio. MP3 decoding is the cost here.

Each is compared with decoding each file alone (``soundfile.read`` of every file, nothing
else) in a pool of as many processes as the manifest stage uses (``manifest.workers``, 0 =
all cores), files handed out in the same chunks; runs alternate between the two sides;
medians of ``--repeats``. Files are hard links to a few dozen spoken sources, so both sides
read from the page cache: this compares CPU work. Figures:
``<layout>_manifest_files_per_s``, ``<layout>_decode_alone_files_per_s`` and
``<layout>_manifest_vs_decode_alone`` (decode-alone time / manifest time: below 1, the
stage costs more than decoding alone), for ``aishell`` and ``cv``.

Prints one JSON object as its last line and writes reports/bench/sources.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from corpus import REPO, emit, median

from asrflow.data.manifest import PROBE_CHUNK, ManifestConfig, write_manifests
from asrflow.data.sources import aishell, common_voice
from asrflow.data.synth_text import generate_splits
from asrflow.data.synth_text_zh import generate_splits as generate_zh
from asrflow.models.frames import frame_geometry
from asrflow.pipeline.config import load_params

SOURCES = 24


def speak(text: str, voice: str, rate: int, path: Path, fmt: str) -> None:
    from scipy.signal import resample_poly
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "--stdout", text], capture_output=True,
                         check=True).stdout
    tmp = path.with_suffix(".raw.wav")
    tmp.write_bytes(wav)
    data, sr = sf.read(tmp, dtype="float32")
    tmp.unlink()
    g = np.gcd(sr, rate)
    sf.write(path, resample_poly(data, rate // g, sr // g), rate, format=fmt)


def aishell_corpus(root: Path, files: int) -> None:
    texts = generate_zh({"s": SOURCES}, 7)["s"]
    src = root / "src"
    src.mkdir(parents=True)
    for i, t in enumerate(texts):
        speak(t.replace(" ", ""), "cmn", 16000, src / f"{i}.wav", "WAV")
    lines = []
    for k in range(files):
        spk = f"S{k // 100:04d}"
        utt = f"BAC009{spk}W{k % 100:04d}"
        d = root / "data_aishell" / "wav" / "train" / spk
        d.mkdir(parents=True, exist_ok=True)
        os.link(src / f"{k % SOURCES}.wav", d / f"{utt}.wav")
        lines.append(f"{utt} {texts[k % SOURCES]}")
    (root / "data_aishell" / "transcript").mkdir(parents=True)
    (root / aishell.TRANSCRIPT).write_text("\n".join(lines) + "\n", encoding="utf-8")


def cv_corpus(root: Path, files: int) -> None:
    texts = generate_splits({"s": SOURCES}, 7)["s"]
    src = root / "src"
    src.mkdir(parents=True)
    for i, t in enumerate(texts):
        speak(t, "en-us", 48000, src / f"{i}.mp3", "MP3")
    (root / "clips").mkdir()
    rows = ["client_id\tpath\tsentence\tup_votes\tdown_votes"]
    for k in range(files):
        name = f"common_voice_en_{k}.mp3"
        os.link(src / f"{k % SOURCES}.mp3", root / "clips" / name)
        rows.append(f"client{k % 50}\t{name}\t{texts[k % SOURCES].capitalize()}.\t2\t0")
    (root / "train.tsv").write_text("\n".join(rows) + "\n")


def _decode(paths: list[str]) -> int:
    for p in paths:
        sf.read(p, dtype="float32")
    return len(paths)


def decode_alone(paths: list[str], workers: int) -> float:
    chunks = [paths[i:i + PROBE_CHUNK] for i in range(0, len(paths), PROBE_CHUNK)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        assert sum(pool.map(_decode, chunks)) == len(paths)
    return time.perf_counter() - t0


def manifest(raw: Path, out: Path, cfg: ManifestConfig, lister) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    m = write_manifests(raw, {"train": ["train"]}, out, cfg, lister)
    took = time.perf_counter() - t0
    if m["rejected"]:
        raise SystemExit(f"{m['rejected']} rejected: the benchmark corpus should be clean ({m})")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    p = load_params(REPO / "params.yaml")
    base = ManifestConfig.from_params(p, frame_geometry(p["model"]), "synth")
    workers = base.workers or os.cpu_count() or 1
    result: dict = {"files": args.files, "workers": workers, "repeats": args.repeats,
                    "audio_codec": base.audio_codec}
    with tempfile.TemporaryDirectory(prefix="asrflow-bench-sources-") as tmp:
        tmp = Path(tmp)
        layouts = {
            "aishell": (aishell_corpus, dataclasses.replace(base, language="zh"),
                        lambda root: (lambda raw, split, subsets: aishell.list_split(root, split, subsets)),
                        lambda root: sorted(str(f) for f in (root / "data_aishell/wav/train").rglob("*.wav"))),
            "cv": (cv_corpus, dataclasses.replace(base, resample=True),
                   lambda root: (lambda raw, split, subsets: common_voice.list_split(root, split, subsets)),
                   lambda root: sorted(str(f) for f in (root / "clips").glob("*.mp3"))),
        }
        for name, (build, cfg, lister, files) in layouts.items():
            root = tmp / name
            build(root, args.files)
            paths = files(root)
            ours, alone = [], []
            for r in range(args.repeats):
                ours.append(manifest(root, tmp / f"{name}-out", cfg, lister(root)))
                alone.append(decode_alone(paths, workers))
                print(f"{name} run {r + 1}: manifest {ours[-1]:.2f} s, decode alone {alone[-1]:.2f} s", flush=True)
            audio_s = sum(sf.info(f).duration for f in paths)
            result.update({f"{name}_audio_hours": round(audio_s / 3600, 3),
                           f"{name}_manifest_files_per_s": round(len(paths) / median(ours), 1),
                           f"{name}_decode_alone_files_per_s": round(len(paths) / median(alone), 1),
                           f"{name}_manifest_vs_decode_alone": round(median(alone) / median(ours), 3)})
    emit("sources", result)


if __name__ == "__main__":
    main()

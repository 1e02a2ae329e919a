"""Shared by the data benchmarks: real spoken FLACs and LibriSpeech-layout corpora built from them.

Sources are spoken by espeak-ng + sox exactly as the synth corpus is, but several
sentences long, so their durations sit near LibriSpeech's (~12 s mean in train).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from asrflow.data.synth import Speaker, Utterance, synthesize  # noqa: E402
from asrflow.data.synth_text import generate_splits  # noqa: E402


def make_sources(out: Path, count: int, sentences_per_file: int = 4, seed: int = 7) -> list[tuple[Path, str]]:
    """``count`` spoken FLACs (with their transcripts) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    sents = generate_splits({"s": count * sentences_per_file}, seed)["s"]
    voices = ["en-us", "en-gb", "en-029", "en-us-nyc"]
    files = []
    for i in range(count):
        text = " ".join(sents[i * sentences_per_file:(i + 1) * sentences_per_file])
        utt = Utterance(Speaker(1000 + i, voices[i % len(voices)], "m1", "train"), "train", 1, i, text, 165, 50)
        path = out / f"src-{i:03d}.flac"
        synthesize(utt, path)
        files.append((path, text.upper()))
    return files


def make_corpus(root: Path, sources: list[tuple[Path, str]], utterances: int, subset: str = "train",
                link: bool = True, per_chapter: int = 100) -> None:
    """``root/LibriSpeech/<subset>/<spk>/<chapter>/`` with ``utterances`` files cycling over
    ``sources``: hard links (cheap, shared page cache) or copies (distinct files on disk)."""
    base = root / "LibriSpeech" / subset
    lines: dict[Path, list[str]] = {}
    for n in range(utterances):
        spk, chap, idx = 100 + n // (per_chapter * 4), n // per_chapter % 4, n % per_chapter
        d = base / str(spk) / str(chap)
        if d not in lines:
            d.mkdir(parents=True, exist_ok=True)
            lines[d] = []
        src, text = sources[n % len(sources)]
        dst = d / f"{spk}-{chap}-{idx:04d}.flac"
        os.link(src, dst) if link else shutil.copyfile(src, dst)
        lines[d].append(f"{spk}-{chap}-{idx:04d} {text}\n")
    for d, ls in lines.items():
        spk, chap = d.parent.name, d.name
        (d / f"{spk}-{chap}.trans.txt").write_text("".join(ls))


def evict(paths) -> None:
    """Drop ``paths`` from the page cache (posix_fadvise DONTNEED): the next read hits the disk."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def provenance() -> dict:
    """Where and when a figure was measured: commit (``-dirty`` with uncommitted changes), UTC
    date, CPU model, cores this process may use, machine."""
    from asrflow.pipeline.lineage import git_state

    git = git_state(REPO)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown") \
        if Path("/proc/cpuinfo").exists() else platform.processor() or "unknown"
    return {"commit": git.label, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu,
            "cores": len(os.sched_getaffinity(0)), "machine": platform.machine()}


def emit(name: str, result: dict) -> None:
    """Write reports/bench/<name>.json (the figures and their provenance) and print the JSON
    object as the last line."""
    result = {**result, "provenance": provenance()}
    out = REPO / "reports" / "bench" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))

"""AISHELL-1 (OpenSLR resource 33): Mandarin read speech, 178 h, 400 speakers.

``<mirror>/33/data_aishell.tgz`` (MD5 pinned below, as OpenSLR publishes it) holds
``data_aishell/transcript/aishell_transcript_v0.8.txt`` (``<utt-id> <word-segmented
text>``) and ``data_aishell/wav/<speaker>.tar.gz``, one per speaker, each unpacking to
``{train,dev,test}/<speaker>/<utt-id>.wav`` (16 kHz mono WAV). The subsets are the corpus's
own speaker split: train (340 speakers), dev (40), test (20).

The manifest stage extracts the outer archive (it may write only ``data_aishell/``), then
each speaker's archive inside it (only ``{train,dev,test}/<that speaker>/``), each once:
a stamp records what was extracted. Some recordings have no transcript line; they are
rejected (``no_transcript``), as any source's would be.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from asrflow.data.archives import (STAMP_DIR, Layout, extract_archives, fetch_verified, link_or_copy, parse_sums,
                                   safe_extract, write_checksums)
from asrflow.data.sources import Listing, Utterance

ARCHIVE = "data_aishell.tgz"
RESOURCE = 33
SUMS = {"md5": "2f494334227864a8a8fec932999db9d8"}  # OpenSLR's, as PaddleSpeech and others pin it
TRANSCRIPT = "data_aishell/transcript/aishell_transcript_v0.8.txt"
SUBSETS = ("train", "dev", "test")
OUTER = Layout((("data_aishell",),))
SPEAKER = Layout((SUBSETS, ("{stem}",)))


def fetch(entry: dict[str, Any], subsets: list[str], out_dir: Path, store: Path, *, seed: int, sample_rate: int,
          log: Callable[[str], None]) -> dict[str, Any]:
    unknown = sorted(set(subsets) - set(SUBSETS))
    if unknown:
        raise ValueError(f"aishell subsets are {', '.join(SUBSETS)} (the corpus's speaker split); not {unknown}")
    sums = parse_sums(entry["checksums"][ARCHIVE]) if ARCHIVE in entry["checksums"] else SUMS
    urls = [f"{m.rstrip('/')}/{RESOURCE}/{ARCHIVE}" for m in entry["mirrors"]]
    path = fetch_verified(ARCHIVE, urls, store, sums, entry["timeout_s"], entry["retries"])
    out_dir.mkdir(parents=True, exist_ok=True)
    link_or_copy(path, out_dir / ARCHIVE)
    write_checksums(out_dir, {ARCHIVE: sums})
    return {"files": 1, "gigabytes": round(path.stat().st_size / 1e9, 3)}


def open_source(archive_dir: Path, raw_dir: Path, max_gb: float, log: Callable[[str], None]) -> tuple[Path, int]:
    """Extract the outer archive, then every speaker archive inside it not yet extracted."""
    done = sum(extract_archives(archive_dir, raw_dir, log=log, max_gb=max_gb, depth=1, layout=OUTER).values())
    wav = raw_dir / "data_aishell" / "wav"
    stamps = wav / STAMP_DIR
    stamps.mkdir(parents=True, exist_ok=True)
    for inner in sorted(wav.glob("*.tar.gz")):
        st = inner.stat()
        key = json.dumps({"bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
        stamp = stamps / inner.name
        if stamp.exists() and stamp.read_text() == key:
            continue
        stamp.unlink(missing_ok=True)
        safe_extract(inner, wav, max_gb, depth=2, layout=SPEAKER)
        stamp.write_text(key)
        done += 1
    if done:
        log(f"extracted {done} archives into {raw_dir}")
    return raw_dir, done


def read_transcript(path: Path) -> dict[str, tuple[int, str]]:
    """``utt-id -> (line, text)``; the first line of an id wins."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the AISHELL-1 transcript is missing from the extracted archive")
    table: dict[str, tuple[int, str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        utt, _, text = line.strip().partition(" ")
        if utt:
            table.setdefault(utt, (n, text))
    return table


def list_split(root: Path, split: str, subsets: list[str]) -> Listing:
    out = Listing()
    transcript = read_transcript(root / TRANSCRIPT)
    for subset in subsets:
        sdir = root / "data_aishell" / "wav" / subset
        if not sdir.is_dir():
            raise FileNotFoundError(f"aishell subset '{subset}' of split '{split}' not found at {sdir}")
        for dirpath, dirnames, filenames in os.walk(sdir):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                out.inputs.append(path)
                utt_id, ext = os.path.splitext(name)
                if ext != ".wav":
                    out.reject(split, subset, utt_id, path, "unsupported_format", f"{name}: only .wav audio is read")
                elif utt_id not in transcript:
                    out.reject(split, subset, utt_id, path, "no_transcript", f"no line in {TRANSCRIPT}")
                else:
                    n, text = transcript[utt_id]
                    out.utterances.append(Utterance(utt_id, text, path, subset, path,
                                                    speaker=os.path.basename(dirpath), where=f"{TRANSCRIPT}:{n}"))
    return out

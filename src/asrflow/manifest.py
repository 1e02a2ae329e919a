"""Manifests: one JSON-lines file and one Parquet table per split, plus a rejects table.

Input is a LibriSpeech-layout tree (``LibriSpeech/<subset>/<spk>/<chapter>/...``). Durations
come from file headers (``soundfile.info``), never from decoding. A bad file or
transcript line never stops the stage and is never dropped silently: it lands in
``rejects.parquet`` with a reason.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from asrflow.text import normalize

COLUMNS = ["audio_filepath", "duration", "text", "utt_id", "speaker_id", "chapter_id", "subset"]
REJECT_COLUMNS = ["split", "subset", "utt_id", "path", "reason", "detail"]


@dataclass(frozen=True)
class ManifestConfig:
    """The ``manifest`` block of params.yaml plus the expected sample rate."""

    min_duration: float
    max_duration: float
    allowed_chars: str
    sample_rate: int
    workers: int = 0


def _probe(path: str) -> tuple[str, float, int, int, str]:
    """(path, duration, sample_rate, channels, error) from the header only."""
    try:
        if os.path.getsize(path) == 0:
            return path, 0.0, 0, 0, "empty file"
        info = sf.info(path)
        if info.frames <= 0:
            return path, 0.0, info.samplerate, info.channels, "no audio frames"
        return path, info.frames / info.samplerate, info.samplerate, info.channels, ""
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError for bad headers
        return path, 0.0, 0, 0, str(e).replace("\n", " ")[:200]


def read_transcripts(subset_dir: Path) -> tuple[list[tuple[str, str, Path]], list[dict[str, str]]]:
    """Every ``(utt_id, text, trans_file)`` in a subset, and rejects for malformed lines."""
    rows, rejects = [], []
    for trans in sorted(subset_dir.rglob("*.trans.txt")):
        for lineno, line in enumerate(trans.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            if not text.strip():
                rejects.append({"utt_id": utt_id, "path": f"{trans}:{lineno}", "reason": "empty_transcript",
                                "detail": "transcript line has an id but no text"})
                continue
            rows.append((utt_id, text, trans))
    return rows, rejects


def build_split(raw_dir: Path, split: str, subsets: list[str], cfg: ManifestConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Rows of one split (sorted by subset, utt_id) and its rejects."""
    allowed = set(cfg.allowed_chars) | {" "}
    candidates, rejects = [], []
    for subset in subsets:
        sdir = raw_dir / "LibriSpeech" / subset
        if not sdir.is_dir():
            raise FileNotFoundError(f"subset '{subset}' of split '{split}' not found at {sdir}")
        rows, bad = read_transcripts(sdir)
        rejects += [{"split": split, "subset": subset, **r} for r in bad]
        seen: set[str] = set()
        listed = {r["utt_id"] for r in bad} | {utt_id for utt_id, _, _ in rows}
        for utt_id, text, trans in rows:
            audio = trans.parent / f"{utt_id}.flac"
            reject = {"split": split, "subset": subset, "utt_id": utt_id, "path": str(audio)}
            if utt_id in seen:
                rejects.append({**reject, "reason": "duplicate_id", "detail": f"second line for {utt_id} in {trans}"})
                continue
            seen.add(utt_id)
            if not audio.exists():
                rejects.append({**reject, "reason": "missing_audio", "detail": f"listed in {trans}"})
                continue
            text = normalize(text)
            bad_chars = sorted(set(text) - allowed)
            if bad_chars:
                rejects.append({**reject, "reason": "bad_characters", "detail": "".join(bad_chars)})
                continue
            candidates.append((utt_id, text, audio, subset))
        for audio in sorted(sdir.rglob("*.flac")):
            if audio.stem not in listed:
                rejects.append({"split": split, "subset": subset, "utt_id": audio.stem, "path": str(audio),
                                "reason": "no_transcript", "detail": "no line in the chapter's trans.txt"})
    workers = cfg.workers or os.cpu_count() or 1
    paths = [str(c[2]) for c in candidates]
    if workers > 1 and len(paths) > 256:
        with ProcessPoolExecutor(workers) as pool:
            probes = list(pool.map(_probe, paths, chunksize=256))
    else:
        probes = [_probe(p) for p in paths]
    good = []
    for (utt_id, text, audio, subset), (_, dur, sr, ch, err) in zip(candidates, probes):
        reject = {"split": split, "subset": subset, "utt_id": utt_id, "path": str(audio)}
        if err:
            rejects.append({**reject, "reason": "unreadable_audio", "detail": err})
        elif sr != cfg.sample_rate:
            rejects.append({**reject, "reason": "wrong_sample_rate", "detail": f"{sr} Hz"})
        elif ch != 1:
            rejects.append({**reject, "reason": "not_mono", "detail": f"{ch} channels"})
        elif dur < cfg.min_duration:
            rejects.append({**reject, "reason": "too_short", "detail": f"{dur:.3f} s"})
        elif dur > cfg.max_duration:
            rejects.append({**reject, "reason": "too_long", "detail": f"{dur:.3f} s"})
        else:
            spk, chap, _ = (utt_id.split("-") + ["", "", ""])[:3]
            good.append({"audio_filepath": str(audio), "duration": round(dur, 6), "text": text, "utt_id": utt_id,
                         "speaker_id": spk, "chapter_id": chap, "subset": subset})
    df = pd.DataFrame(good, columns=COLUMNS).sort_values(["subset", "utt_id"], kind="stable").reset_index(drop=True)
    return df, rejects


def write_manifests(raw_dir: str | Path, splits: dict[str, list[str]], out_dir: str | Path,
                    cfg: ManifestConfig) -> dict[str, Any]:
    """Write ``<split>.jsonl``, ``<split>.parquet`` and ``rejects.parquet`` into ``out_dir``.

    Returns metrics: utterances and hours per split, rejects per reason.
    Raises ValueError if a split ends up empty (nothing left to train or score on).
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {}
    all_rejects: list[dict] = []
    speakers: dict[str, set[str]] = {}
    for split, subsets in splits.items():
        df, rejects = build_split(raw_dir, split, subsets, cfg)
        speakers[split] = set(df["speaker_id"])
        all_rejects += rejects
        if df.empty:
            raise ValueError(f"split '{split}' has no usable utterance ({len(rejects)} rejected; see rejects)")
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in df[["audio_filepath", "duration", "text"]].itertuples(index=False):
                f.write(json.dumps({"audio_filepath": row.audio_filepath, "duration": row.duration,
                                    "text": row.text}, ensure_ascii=False) + "\n")
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), out_dir / f"{split}.parquet")
        metrics[f"{split}_utterances"] = int(len(df))
        metrics[f"{split}_hours"] = round(float(df["duration"].sum()) / 3600, 4)
        metrics[f"{split}_speakers"] = len(speakers[split])
    for split in splits:
        if split != "train":
            # Speakers a scored split shares with training: 0 means the split measures unseen voices.
            metrics[f"{split}_speakers_in_train"] = len(speakers[split] & speakers.get("train", set()))
    rej = pd.DataFrame(all_rejects, columns=REJECT_COLUMNS)
    pq.write_table(pa.Table.from_pandas(rej, preserve_index=False), out_dir / "rejects.parquet")
    reasons = Counter(r["reason"] for r in all_rejects)
    metrics["rejected"] = int(len(all_rejects))
    metrics.update({f"rejected_{k}": int(v) for k, v in sorted(reasons.items())})
    return metrics


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A split's Parquet manifest (``audio_filepath``, ``duration``, ``text``, ids)."""
    return pd.read_parquet(path)

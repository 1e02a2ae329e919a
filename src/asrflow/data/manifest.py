"""Manifests: one JSON-lines file and one Parquet table per split, plus a rejects table.

A dataset's source lists each split's utterances (:mod:`asrflow.data.sources`; LibriSpeech's
layout, ``LibriSpeech/<subset>/<spk>/<chapter>/...``, unless told otherwise); everything
after that is the same for every source. Transcripts are normalised by the dataset's
language (:func:`text_rule`). Durations come from file headers (``soundfile.info``) and one seek to the last frame
(which catches truncated files), never from decoding whole files; the probes run on
every core. A bad file or transcript line never stops the stage and is never dropped
silently: it lands in ``rejects.parquet`` with a reason and a detail.

Parquet rows are sorted by duration and written in row groups of ``row_group_rows``;
with ``audio_bytes`` each row carries its audio (column ``audio``), so readers stream a
few large sequential files instead of opening every small one. ``audio_codec`` says in
what form: ``flac``, the file's own bytes (decoded again at every read), or ``pcm16``, the
samples decoded once here as little-endian int16 (about 1.6x the FLAC size; reading is a
copy, ~30x faster than decoding FLAC, and gives the same float32 samples bit for bit).
The codec is recorded in the Parquet schema's metadata.
"""

from __future__ import annotations

import bisect
import json
import os
import sys
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from soundfile import _ffi, _snd  # libsndfile's C API, as soundfile binds it
from tqdm import tqdm

from asrflow.data.sources import Listing, Utterance
from asrflow.data.sources.librispeech import list_split as list_librispeech
from asrflow.features.geometry import conv_output_length, ctc_min_frames
from asrflow.text.normalize import text_rule

COLUMNS = ["audio_filepath", "duration", "text", "utt_id", "speaker_id", "chapter_id", "subset", "offset", "weight"]
CLIP = "_clip"  # (offset s, duration s) of a row whose samples are cut from its file or resampled; else None
AUDIO = "audio"
CODEC_KEY = b"asrflow.audio_codec"  # Parquet schema metadata: how the audio column is encoded
RATE_KEY = b"asrflow.sample_rate"   # ... and at what sample rate (the manifest stage rejects other rates)
CODECS = ("flac", "pcm16")
REJECT_COLUMNS = ["split", "subset", "utt_id", "path", "reason", "detail"]
# Every reason a row can be rejected for (README: "What a rejects table is").
REASONS = {
    "unreadable_audio": "header cannot be parsed: 0-byte file, non-audio bytes, corrupt header",
    "truncated_audio": "header promises more frames than the file holds",
    "wrong_sample_rate": "sample rate differs from features.sample_rate",
    "not_mono": "more than one channel",
    "too_short": "shorter than manifest.min_duration",
    "too_long": "longer than manifest.max_duration",
    "too_short_for_label": "fewer frames after the conv front end than CTC needs for the transcript",
    "bad_characters": "transcript holds characters outside manifest.allowed_chars",
    "empty_transcript": "transcript line with an id and no text",
    "no_transcript": "audio file with no transcript line",
    "missing_audio": "transcript line for a file that does not exist",
    "duplicate_id": "a second transcript line for the same utterance id, or the same id in another chapter",
    "unsupported_format": "a file other than .flac audio and .trans.txt transcripts (e.g. .wav, .FLAC), or a "
                          ".flac holding another format, or a file whose path is not valid UTF-8",
    "needs_pcm16": "a segment of a file, or audio to resample, while manifest.audio_codec is not pcm16 (with "
                   "audio_bytes: true): only pcm16 stores the converted samples",
    "bad_segment": "a segment (Kaldi segments, NeMo offset/duration) outside its file, or of no length",
    "outside_corpus": "a list line whose audio path leaves the corpus folder (folder source)",
    "pipe_refused": "a Kaldi wav.scp line that is a command, while the dataset's allow_pipes is false",
    "pipe_failed": "a Kaldi wav.scp command that failed or wrote no audio (allow_pipes: true)",
    "malformed_line": "a list line that cannot be parsed (a TSV row with too few fields, bad JSON, no id)",
}
PROBE_CHUNK = 64
_SFM_READ = 0x10
_SF_FORMAT_TYPEMASK = 0x0FFF0000  # libsndfile's sndfile.h: container types
_CONTAINERS = {0x010000: "WAV", 0x130000: "WAV", 0x220000: "WAV", 0x020000: "AIFF", 0x170000: "FLAC",
               0x200000: "Ogg", 0x230000: "MP3"}  # WAV, WAVEX and RF64 are all WAV to a user
# what a file's extension promises; any other extension is unsupported_format
EXTENSIONS = {".flac": "FLAC", ".wav": "WAV", ".mp3": "MP3", ".ogg": "Ogg", ".opus": "Ogg"}


@dataclass(frozen=True)
class ManifestConfig:
    """The ``manifest`` block of params.yaml, plus the feature and conv geometry the
    too-short-for-label check needs."""

    min_duration: float
    max_duration: float
    allowed_chars: str
    sample_rate: int
    workers: int
    audio_bytes: bool
    audio_codec: str
    row_group_rows: int
    hop_ms: float
    conv_kernel_t: int
    time_strides: tuple[int, ...]
    language: str                  # the dataset's: how transcripts are normalised (text_rule)
    resample: bool                 # the dataset's: resample audio at another rate (else reject it)

    @classmethod
    def from_params(cls, p: dict[str, Any], geometry: tuple[int, list[int]], dataset: str) -> "ManifestConfig":
        """From params.yaml, with the chosen model family's time geometry (kernel, strides:
        :func:`asrflow.models.frames.frame_geometry`) and ``dataset``'s language and resample."""
        m, f = p["manifest"], p["features"]
        ds = p["datasets"][dataset]
        return cls(min_duration=m["min_duration"], max_duration=m["max_duration"], allowed_chars=m["allowed_chars"],
                   sample_rate=f["sample_rate"], workers=m["workers"], audio_bytes=m["audio_bytes"],
                   audio_codec=m["audio_codec"], row_group_rows=m["row_group_rows"], hop_ms=f["hop_ms"],
                   conv_kernel_t=geometry[0], time_strides=tuple(geometry[1]), language=ds["language"],
                   resample=ds["resample"])

    def model_frames(self, num_samples: int) -> int:
        """Frames the acoustic model emits for ``num_samples`` (features, then conv front end)."""
        hop = int(round(self.sample_rate * self.hop_ms / 1000))
        return conv_output_length(num_samples // hop + 1, self.conv_kernel_t, list(self.time_strides))


def probe(path: str) -> tuple[int, int, int, str, str]:
    """``(frames, sample_rate, channels, reason, detail)`` from the header and the last frame.

    Opens the file with libsndfile (through soundfile's C binding, without the Python
    wrapper's per-call overhead: this runs once per utterance), reads the header, then
    seeks to the last frame and decodes just that block: a file cut short (an interrupted
    copy) fails there. Corruption in the middle of a file is only found by decoding it
    all; the loaders name such a file when they meet it.
    """
    try:
        if os.path.getsize(path) == 0:
            return 0, 0, 0, "unreadable_audio", "0-byte file"
    except OSError as e:
        return 0, 0, 0, "missing_audio", str(e)
    info = _ffi.new("SF_INFO*")
    handle = _snd.sf_open(path.encode(), _SFM_READ, info)
    if handle == _ffi.NULL:
        err = _ffi.string(_snd.sf_strerror(_ffi.NULL)).decode("utf-8", "replace")
        return 0, 0, 0, "unreadable_audio", err.replace("\n", " ")[:200]
    try:
        frames, sr, ch = int(info.frames), int(info.samplerate), int(info.channels)
        container = int(info.format) & _SF_FORMAT_TYPEMASK
        kind, ext = _CONTAINERS.get(container, hex(container)), os.path.splitext(path)[1].lower()
        if EXTENSIONS.get(ext) != kind:  # e.g. WAV bytes under a .flac name: not what the name says
            return frames, sr, ch, "unsupported_format", f"{kind} data in a {ext or 'extension-less'} file"
        if frames <= 0:
            return 0, sr, ch, "unreadable_audio", "no audio frames"
        buf = _ffi.new("short[]", ch)
        if _snd.sf_seek(handle, frames - 1, 0) != frames - 1 or _snd.sf_readf_short(handle, buf, 1) != 1:
            return frames, sr, ch, "truncated_audio", f"header promises {frames} frames; the last cannot be read"
        return frames, sr, ch, "", ""
    finally:
        _snd.sf_close(handle)


def _probe_many(paths: list[str]) -> list[tuple[int, int, int, str, str]]:
    return [probe(p) for p in paths]


def probe_all(paths: list[str], workers: int, desc: str) -> list[tuple[int, int, int, str, str]]:
    """:func:`probe` over ``paths`` on ``workers`` processes, in order, with a progress bar."""
    chunks = [paths[i:i + PROBE_CHUNK] for i in range(0, len(paths), PROBE_CHUNK)]
    bar = tqdm(total=len(paths), desc=desc, unit="file", file=sys.stderr, disable=len(paths) < 1000,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    out: list = []
    with bar:
        if workers > 1 and len(chunks) > 1:
            with ProcessPoolExecutor(workers) as pool:
                for res in pool.map(_probe_many, chunks):
                    out += res
                    bar.update(len(res))
        else:
            for c in chunks:
                out += _probe_many(c)
                bar.update(len(c))
    return out


def build_split(raw_dir: Path, split: str, subsets: list[str], cfg: ManifestConfig,
                lister: Callable[[Path, str, list[str]], Listing] | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Rows of one split, sorted by duration (then subset, utt_id), and its rejects.

    ``lister`` lists the split's utterances (a source's ``list_split``; LibriSpeech's layout
    when None); every check after that is the same for every source.
    """
    listing = (lister or list_librispeech)(Path(raw_dir), split, subsets)
    rejects = list(listing.rejects)
    norm, allowed = text_rule(cfg.language, cfg.allowed_chars)
    candidates: list[tuple[Utterance, str]] = []
    first: dict[str, str] = {}
    for u in listing.utterances:
        reject = {"split": split, "subset": u.subset, "utt_id": u.utt_id, "path": u.audio, "key": u.key}
        text = norm(u.text)
        if u.utt_id in first:
            rejects.append({**reject, "reason": "duplicate_id",
                            "detail": f"{u.utt_id} ({u.where or u.key}) repeats the id of {first[u.utt_id]}"})
        elif not text:
            rejects.append({**reject, "reason": "empty_transcript",
                            "detail": f"no text left after normalisation ({u.where or u.key})"})
        elif bad := "".join(sorted(set(text) - allowed)):
            rejects.append({**reject, "reason": "bad_characters", "detail": bad})
        else:
            candidates.append((u, text))
        first.setdefault(u.utt_id, u.where or u.key)
    workers = cfg.workers or os.cpu_count() or 1
    files = list(dict.fromkeys(u.audio for u, _ in candidates))  # segments share their file's probe
    probes = dict(zip(files, probe_all(files, workers, f"probe {split}")))
    pcm16 = cfg.audio_bytes and cfg.audio_codec == "pcm16"  # the only form that stores converted samples
    good = []
    for u, text in candidates:
        frames, sr, ch, reason, detail = probes[u.audio]
        reject = {"split": split, "subset": u.subset, "utt_id": u.utt_id, "path": u.audio, "key": u.key}
        whole = frames / sr if sr else 0.0
        dur = u.duration if u.duration is not None else whole - u.offset
        clipped = u.offset > 0 or u.duration is not None
        samples = int(round(dur * cfg.sample_rate))
        if reason:
            rejects.append({**reject, "reason": reason, "detail": detail})
        elif sr != cfg.sample_rate and not cfg.resample:
            rejects.append({**reject, "reason": "wrong_sample_rate",
                            "detail": f"{sr} Hz (set the dataset's resample: true to resample it to "
                                      f"{cfg.sample_rate} Hz)"})
        elif (clipped or sr != cfg.sample_rate) and not pcm16:
            what = "a segment of its file" if clipped else f"{sr} Hz audio to resample"
            rejects.append({**reject, "reason": "needs_pcm16",
                            "detail": f"{what}: only manifest.audio_bytes: true with audio_codec: pcm16 stores "
                                      "the converted samples"})
        elif ch != 1:
            rejects.append({**reject, "reason": "not_mono", "detail": f"{ch} channels"})
        elif u.offset < 0 or u.offset + dur > whole + 1e-3 or dur <= 0:
            rejects.append({**reject, "reason": "bad_segment",
                            "detail": f"{u.offset:.3f} s + {dur:.3f} s in a file of {whole:.3f} s"})
        elif dur < cfg.min_duration:
            rejects.append({**reject, "reason": "too_short", "detail": f"{dur:.3f} s"})
        elif dur > cfg.max_duration:
            rejects.append({**reject, "reason": "too_long", "detail": f"{dur:.3f} s"})
        elif cfg.model_frames(samples) < ctc_min_frames(text):
            rejects.append({**reject, "reason": "too_short_for_label",
                            "detail": f"{cfg.model_frames(samples)} model frames for {len(text)} characters "
                                      f"(CTC needs {ctc_min_frames(text)})"})
        else:
            good.append({"audio_filepath": u.audio, "duration": round(dur, 6), "text": text, "utt_id": u.utt_id,
                         "speaker_id": u.speaker, "chapter_id": u.chapter, "subset": u.subset,
                         "offset": round(u.offset, 6), "weight": float(u.weight), "key": u.key,
                         CLIP: (u.offset, dur) if clipped or sr != cfg.sample_rate else None})
    check_accounted(listing.inputs, [g["key"] for g in good], rejects)
    df = pd.DataFrame(good, columns=[*COLUMNS, "key", CLIP])
    df = df.sort_values(["duration", "subset", "utt_id"], kind="stable").reset_index(drop=True)
    return df, rejects


def check_accounted(files: list[str], rows: list[str], rejects: list[dict]) -> None:
    """The manifest's invariant: every input a source listed (an audio file found under the
    split's subsets, transcripts aside; a list line) is exactly one accepted row's or one
    reject's key (its path where it has no key). Raises RuntimeError naming what is missing
    or counted twice: nothing may be dropped silently."""
    found = set(files)
    counted = Counter(rows + [k for r in rejects if (k := r.get("key", r["path"])) in found])
    missing = sorted(found - set(counted))
    twice = sorted(p for p, n in counted.items() if n > 1)
    if missing or twice:
        raise RuntimeError(f"manifest invariant broken: {len(found)} files found, {len(rows)} rows + "
                           f"{sum(counted.values()) - len(rows)} rejects account for them; "
                           + (f"not accounted for: {missing[:5]}" if missing else "")
                           + (f" counted twice: {twice[:5]}" if twice else ""))


def _schema(cfg: ManifestConfig) -> pa.Schema:
    fields = [pa.field("audio_filepath", pa.string()), pa.field("duration", pa.float64()),
              pa.field("text", pa.string()), pa.field("utt_id", pa.string()), pa.field("speaker_id", pa.string()),
              pa.field("chapter_id", pa.string()), pa.field("subset", pa.string()), pa.field("offset", pa.float64()),
              pa.field("weight", pa.float64())]
    if not cfg.audio_bytes:
        return pa.schema(fields)
    return pa.schema(fields + [pa.field(AUDIO, pa.binary())],
                     metadata={CODEC_KEY: cfg.audio_codec.encode(), RATE_KEY: str(cfg.sample_rate).encode()})


def audio_payload(path: str, codec: str, clip: tuple[float, float] | None = None,
                  sample_rate: int = 16000) -> tuple[bytes | None, str]:
    """What a Parquet row carries for ``path``: the file's bytes (``flac``) or its samples as
    little-endian int16 (``pcm16``); ``(None, why)`` if it cannot be read now.

    ``clip`` (pcm16 only): ``(offset, duration)`` in seconds, the part of the file the row is,
    resampled to ``sample_rate`` if the file has another rate (polyphase filtering, scipy's
    resample_poly, once here: training reads the stored samples).
    """
    try:
        if codec == "flac":
            with open(path, "rb") as f:
                return f.read(), ""
        if clip is None:
            data, _ = sf.read(path, dtype="int16", always_2d=True)
            return np.ascontiguousarray(data[:, 0], dtype="<i2").tobytes(), ""
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            start = int(round(clip[0] * sr))
            f.seek(start)
            data = f.read(int(round(clip[1] * sr)), dtype="float32", always_2d=True)[:, 0]
        if sr != sample_rate:
            from math import gcd

            from scipy.signal import resample_poly
            g = gcd(sr, sample_rate)
            data = resample_poly(data, sample_rate // g, sr // g).astype(np.float32)
        pcm = np.clip(np.round(data * 32768.0), -32768, 32767).astype("<i2")
        return pcm.tobytes(), ""
    except Exception as e:  # vanished, unreadable or undecodable since it was probed
        return None, f"unreadable after probing: {e}"


def _payloads(args: tuple[list[str], list, str, int]) -> list[tuple[bytes | None, str]]:
    paths, clips, codec, rate = args
    return [audio_payload(p, codec, c, rate) for p, c in zip(paths, clips)]


def _ordered(pool: ProcessPoolExecutor, fn, jobs: list, ahead: int):
    """``fn`` over ``jobs`` on ``pool``, results in order, at most ``ahead`` submitted but not yet taken."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def write_split(df: pd.DataFrame, out_dir: Path, split: str, cfg: ManifestConfig) -> tuple[int, list[dict]]:
    """Write ``<split>.parquet`` (row groups in duration order, audio optional) and
    ``<split>.jsonl`` row group by row group, so memory holds one group's audio at most.

    A file that vanished or cannot be read since it was probed is rejected, not fatal.
    Returns (rows written, rejects).
    """
    schema, rejects, written = _schema(cfg), [], 0
    workers = cfg.workers or os.cpu_count() or 1
    # pcm16 decodes every file once: spread over the cores, a row group's files per task
    pool = ProcessPoolExecutor(workers) if cfg.audio_bytes and cfg.audio_codec == "pcm16" and workers > 1 else None
    chunks = [df.iloc[start:start + cfg.row_group_rows] for start in range(0, len(df), cfg.row_group_rows)]
    jobs = [(c["audio_filepath"].tolist(), c[CLIP].tolist() if CLIP in c else [None] * len(c), cfg.audio_codec,
             cfg.sample_rate) for c in chunks]
    if not cfg.audio_bytes:
        payloads = iter([None] * len(chunks))
    else:  # in order, the pool a few row groups ahead of the writer (memory: ~workers groups of audio)
        payloads = _ordered(pool, _payloads, jobs, ahead=workers + 2) if pool else map(_payloads, jobs)
    pq_tmp, jl_tmp = out_dir / f".{split}.parquet.tmp", out_dir / f".{split}.jsonl.tmp"
    # FLAC does not compress, nor does snappy squeeze PCM: the audio column is stored plain.
    text_cols = [c for c in schema.names if c != AUDIO]
    try:
        with pq.ParquetWriter(pq_tmp, schema, compression={**{c: "snappy" for c in text_cols}, AUDIO: "none"},
                              use_dictionary=text_cols) as writer, open(jl_tmp, "w", encoding="utf-8") as jl:
            for chunk, payload in zip(chunks, payloads):
                written += _write_group(chunk, payload, split, cfg, writer, jl, schema, rejects)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    os.replace(pq_tmp, out_dir / f"{split}.parquet")
    os.replace(jl_tmp, out_dir / f"{split}.jsonl")
    return written, rejects


def _write_group(chunk: pd.DataFrame, payload: list[tuple[bytes | None, str]] | None, split: str,
                 cfg: ManifestConfig, writer: pq.ParquetWriter, jl, schema: pa.Schema, rejects: list[dict]) -> int:
    """One row group (and its JSON lines); rows whose audio cannot be read now are rejected."""
    cols = {c: chunk[c].tolist() for c in COLUMNS}
    if cfg.audio_bytes:
        blobs, keep = [], []
        for i, (blob, why) in enumerate(payload):
            if blob is None:
                rejects.append({"split": split, "subset": cols["subset"][i], "utt_id": cols["utt_id"][i],
                                "path": cols["audio_filepath"][i], "reason": "missing_audio", "detail": why})
            else:
                blobs.append(blob)
                keep.append(i)
        cols = {c: [v[i] for i in keep] for c, v in cols.items()}
        cols[AUDIO] = blobs
    if not cols["utt_id"]:
        return 0
    writer.write_table(pa.Table.from_pydict(cols, schema=schema), row_group_size=cfg.row_group_rows)
    for path, dur, text, offset, weight in zip(cols["audio_filepath"], cols["duration"], cols["text"], cols["offset"],
                                               cols["weight"]):
        row = {"audio_filepath": path, "duration": dur, "text": text, **({"offset": offset} if offset else {}),
               **({"weight": weight} if weight != 1 else {})}
        jl.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(cols["utt_id"])


def write_manifests(raw_dir: str | Path, splits: dict[str, list[str]], out_dir: str | Path,
                    cfg: ManifestConfig, lister: Callable[[Path, str, list[str]], Listing] | None = None
                    ) -> dict[str, Any]:
    """Write ``<split>.jsonl``, ``<split>.parquet`` and ``rejects.parquet`` into ``out_dir``.

    ``lister``: the dataset source's ``list_split`` (LibriSpeech's layout under ``raw_dir``
    when None).

    Returns metrics: utterances, hours and speakers per split, rejects per reason.
    Raises ValueError if a split ends up empty (nothing left to train or score on).
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {}
    all_rejects: list[dict] = []
    speakers: dict[str, set[str]] = {}
    texts: dict[str, set[str]] = {}
    for split, subsets in splits.items():
        df, rejects = build_split(raw_dir, split, subsets, cfg, lister)
        n, late = write_split(df, out_dir, split, cfg)
        rejects += late
        all_rejects += rejects
        if not n:
            raise ValueError(f"split '{split}' has no usable utterance ({len(rejects)} rejected; "
                             f"see {out_dir / 'rejects.parquet'})")
        late_ids = {r["utt_id"] for r in late}
        df = df[~df["utt_id"].isin(late_ids)]
        speakers[split] = set(df["speaker_id"]) - {""}  # '' = the corpus does not say
        texts[split] = set(df["text"])
        metrics[f"{split}_utterances"] = int(len(df))
        metrics[f"{split}_hours"] = round(float(df["duration"].sum()) / 3600, 4)
        metrics[f"{split}_speakers"] = len(speakers[split])
        metrics[f"{split}_row_groups"] = pq.ParquetFile(out_dir / f"{split}.parquet").num_row_groups
    for split in splits:
        if split != "train":
            # Speakers a scored split shares with training: 0 means the split measures unseen voices.
            metrics[f"{split}_speakers_in_train"] = len(speakers[split] & speakers.get("train", set()))
            # and the sentences it shares: read in training, a sentence is not a fair test of it
            metrics[f"{split}_texts_in_train"] = len(texts[split] & texts.get("train", set()))
    rej = pd.DataFrame(all_rejects, columns=REJECT_COLUMNS)
    pq.write_table(pa.Table.from_pandas(rej, preserve_index=False), out_dir / "rejects.parquet")
    reasons = Counter(r["reason"] for r in all_rejects)
    metrics["rejected"] = int(len(all_rejects))
    metrics.update({f"rejected_{k}": int(v) for k, v in sorted(reasons.items())})
    return metrics


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A split's Parquet manifest without the audio bytes (``audio_filepath``, ``duration``,
    ``text``, ids), in file order (by duration)."""
    names = pq.ParquetFile(path).schema_arrow.names
    return pd.read_parquet(path, columns=[c for c in names if c != AUDIO])


class ManifestAudio:
    """Decoded waveforms of a Parquet manifest's rows, by row index.

    When the manifest carries the encoded audio, a row is decoded from its row group,
    read whole from the memory-mapped file and kept, as an Arrow array, in a small cache:
    a row's bytes are a zero-copy view of it, so walking rows in file or batch order
    reads each group about once and copies each row once, into its float32 samples.
    The row group is the unit of reading, so its size (``manifest.row_group_rows``) sets
    how much is read for a batch that needs only some of its rows. Otherwise the row's
    file is opened. Safe to use from forked DataLoader workers (each process opens its
    own handle).
    """

    def __init__(self, path: str | Path, sample_rate: int, cache_groups: int = 4):
        self.path, self.sample_rate, self.cache_groups = str(path), sample_rate, cache_groups
        pf = pq.ParquetFile(self.path)
        self.embedded = AUDIO in pf.schema_arrow.names
        meta = pf.schema_arrow.metadata or {}
        self.codec = meta.get(CODEC_KEY, b"flac").decode()
        if self.codec not in CODECS:
            raise ValueError(f"{path}: audio column encoded as {self.codec!r}, this asrflow reads {', '.join(CODECS)}")
        rate = int(meta.get(RATE_KEY, b"0"))
        if self.embedded and rate and rate != sample_rate:
            raise ValueError(f"{path}: audio stored at {rate} Hz, {sample_rate} Hz wanted (features.sample_rate): "
                             "re-run the manifest stage")
        self.paths = pf.read(columns=["audio_filepath"]).column(0).to_pylist()
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        self._starts = [sum(sizes[:g]) for g in range(len(sizes))]
        self._file: pq.ParquetFile | None = None
        self._pid = -1
        self._cache: dict[int, pa.ChunkedArray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _group_of(self, i: int) -> int:
        return bisect.bisect_right(self._starts, i) - 1

    def encoded(self, i: int) -> bytes | pa.Buffer:
        """Row ``i``'s encoded audio: a read-only view into its cached row group (any
        bytes-like use), else the file's bytes."""
        if not self.embedded:
            with open(self.paths[i], "rb") as f:
                return f.read()
        if self._pid != os.getpid():
            self._file, self._pid, self._cache = pq.ParquetFile(self.path, memory_map=True), os.getpid(), {}
        g = self._group_of(i)
        if g not in self._cache:
            if len(self._cache) >= self.cache_groups:
                self._cache.pop(next(iter(self._cache)))
            self._cache[g] = self._file.read_row_group(g, columns=[AUDIO]).column(0)  # >2 GB: several chunks
        return self._cache[g][i - self._starts[g]].as_buffer()

    def __getitem__(self, i: int):
        from asrflow.data.audio import load_audio
        if not self.embedded:
            return load_audio(self.paths[i], self.sample_rate)
        if self.codec == "pcm16":  # soundfile's own int16 -> float32 scaling: the same samples bit for bit
            return np.frombuffer(self.encoded(i), dtype="<i2").astype(np.float32) * np.float32(1 / 32768)
        return load_audio(self.encoded(i), self.sample_rate, name=f"{self.path} row {i} ({self.paths[i]})")

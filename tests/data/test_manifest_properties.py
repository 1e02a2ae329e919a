"""Property-based test (Hypothesis) of the manifest stage's invariant: nothing lost, nothing let in.

Hypothesis draws LibriSpeech-layout trees (``<spk>/<chapter>/`` folders with a
``<spk>-<chapter>.trans.txt`` and ``<spk>-<chapter>-<utt>.flac`` audio) holding random mixes
of good and bad files and transcript lines: good FLACs, 0-byte files, non-audio bytes, cut
FLACs, WAV bytes named ``.flac``, stereo, 8 kHz and too-short audio, ``.FLAC``/``.wav``
extensions, stray files with odd names (spaces, tabs, newlines, non-ASCII, bytes that are not
UTF-8), lines with a byte-order mark, a tab after the id, whitespace runs in the text,
characters outside the vocabulary, an id and no text, lines without audio, audio without a
line, CRLF endings, and the same id in two chapters (or twice in one file).

:func:`asrflow.data.manifest.write_manifests` (what the manifest stage runs) then must:

- account for every file under the tree exactly once, as a manifest row or a reject;
- give each reject a reason that is true of that file (a file with several faults may get
  any of them), and a detail;
- accept every good utterance (good 16 kHz mono FLAC, its id's first line with text, in the
  chapter's own transcript file, text in the vocabulary, long enough for its label), and
  nothing else;
- carry, in each row, the audio of that very file (decoded samples compared with what the
  test wrote: every good file in an example has different content) and the text of its own line;
- give every transcript line an outcome too: its file's row or reject, or a reject of its own
  (no audio beside it, a repeated id, no text).

The expected outcome is computed from what the test wrote, not from the product's code.
Deterministic in CI: ``derandomize=True`` and no example database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from asrflow.data.manifest import REASONS, ManifestAudio, read_manifest, write_manifests
from asrflow.features.geometry import ctc_min_frames
from manifest_fixtures import CFG, tone

SUBSET = "train"
POOL = 40  # distinct good FLACs: more than a tree can hold, so no two good files share content
GOOD_SECONDS = [0.6 + 0.02 * k for k in range(POOL)]  # distinct lengths, so distinct samples
AUDIO_KINDS = ["good"] * 10 + ["empty", "garbage", "fake_flac", "truncated", "wav", "stereo", "rate8k", "short"]
# what is true of a file of each kind once it is probed (cut FLACs fail at the header or the end)
AUDIO_REASONS = {"empty": {"unreadable_audio"}, "garbage": {"unreadable_audio"}, "fake_flac": {"unreadable_audio"},
                 "truncated": {"truncated_audio", "unreadable_audio"}, "wav": {"unsupported_format"},
                 "stereo": {"not_mono"}, "rate8k": {"wrong_sample_rate"}, "short": {"too_short"}}
EXTENSIONS = [".flac"] * 8 + [".FLAC", ".wav", ".Flac", None]  # None: no audio file for the line
LINE_KINDS = ["plain"] * 6 + ["tab", "bom", "bad_chars", "empty", "none"]
BAD_CHARS = ["1", "!", "É", "ß", "Ж", "-", "\ufffd", "\u200b", "é"]
# stray names; bytes are a name that is not UTF-8 (Latin-1 'é'), as archives made on Windows hold
STRAY_NAMES: list[str | bytes] = ["notes.txt", "a b.flac", "café.flac", "tab\there.flac", "new\nline.flac",
                                  "cr\r.flac", ".hidden.flac", "README", "日本語.flac", "x.flac.bak",
                                  "back\\slash.flac", "-n.flac", "x.TRANS.TXT", "notes.trans.txt",
                                  b"caf\xe9.flac", b"\xff\xfe.wav"]
WORD = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ'", min_size=1, max_size=5)


@cache
def audio_bytes(kind: str, k: int = 0) -> bytes:
    """The bytes of a file of ``kind`` (``good``: pool entry ``k``), made once per content."""
    if kind == "good":
        return _encode(GOOD_SECONDS[k])
    if kind == "empty":
        return b""
    if kind == "garbage":
        return b"this is a text file, not audio\n" * 3
    if kind == "fake_flac":
        return b"fLaC" + bytes(60)
    if kind == "truncated":
        return audio_bytes("good", POOL - 1)[: len(audio_bytes("good", POOL - 1)) // 2]
    if kind == "wav":
        return _encode(1.0, fmt="WAV")
    if kind == "stereo":
        return _encode(1.0, channels=2)
    if kind == "rate8k":
        return _encode(1.0, sr=8000)
    if kind == "short":
        return _encode(0.1)
    raise ValueError(kind)


def _encode(seconds: float, sr: int = 16000, channels: int = 1, fmt: str = "FLAC") -> bytes:
    buf = io.BytesIO()
    tone(buf, seconds=seconds, sr=sr, channels=channels, fmt=fmt)
    return buf.getvalue()


def samples_hash(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()


@cache
def good_samples(k: int) -> tuple[str, int]:
    """(hash of the decoded float32 samples, frame count) of good pool entry ``k``."""
    data, _ = sf.read(io.BytesIO(audio_bytes("good", k)), dtype="float32")
    return samples_hash(data), len(data)


@dataclass
class Utt:
    """One utterance as drawn: its id, its audio file (``ext`` None: none) and its line(s)."""

    utt_id: str
    ext: str | None
    audio: str
    line: str
    text: str
    repeat_text: str | None  # a second line with the same id at the end of the file


@dataclass
class Chapter:
    """One chapter folder as drawn: its utterances, stray files, line endings and BOM."""

    spk: str
    chap: str
    utts: list[Utt]
    strays: list[tuple[str | bytes, str, bool]]  # (name, audio kind, at the speaker level)
    crlf: bool
    bom: bool
    order: list[int] = field(default_factory=list)  # line order: a permutation of utts


@st.composite
def words(draw) -> str:
    """1-3 upper-case words (sometimes 8-12: too long a label for the audio), separated by a
    space, or runs of spaces and tabs."""
    ws = draw(st.lists(WORD, min_size=8, max_size=12) if draw(st.integers(0, 9)) == 0 else
              st.lists(WORD, min_size=1, max_size=3))
    seps = draw(st.lists(st.sampled_from([" ", " ", "  ", "\t", " \t "]), min_size=len(ws) - 1,
                         max_size=len(ws) - 1))
    return "".join(w + s for w, s in zip(ws, seps + [""]))


@st.composite
def trees(draw) -> list[Chapter]:
    """Chapters of 1-3 speakers, with utterances, stray files and duplicate ids across chapters."""
    keys = draw(st.lists(st.tuples(st.sampled_from(["2", "19", "7"]), st.sampled_from(["1", "10", "3"])),
                         min_size=1, max_size=3, unique=True))
    chapters, taken = [], []
    for spk, chap in keys:
        utts = []
        for n in draw(st.lists(st.integers(0, 30), min_size=2, max_size=6, unique=True)):
            utt_id = f"{spk}-{chap}-{n:04d}"
            if taken and draw(st.integers(0, 5)) == 0:  # the id of an utterance of another chapter
                utt_id = draw(st.sampled_from(taken))
                if any(u.utt_id == utt_id for u in utts):
                    continue
            text = draw(words())
            kind = draw(st.sampled_from(LINE_KINDS))
            if kind == "bad_chars":
                cut = draw(st.integers(0, len(text)))
                text = text[:cut] + draw(st.sampled_from(BAD_CHARS)) + text[cut:]
            line = {"plain": f"{utt_id} {text}", "tab": f"{utt_id}\t{text}", "bom": f"\ufeff{utt_id} {text}",
                    "bad_chars": f"{utt_id} {text}", "empty": draw(st.sampled_from([utt_id, f"{utt_id}  "])),
                    "none": ""}[kind]
            repeat = draw(words()) if draw(st.integers(0, 7)) == 0 else None
            utts.append(Utt(utt_id, draw(st.sampled_from(EXTENSIONS)), draw(st.sampled_from(AUDIO_KINDS)), line,
                            text if kind not in ("empty", "none") else "", repeat))
            taken.append(utt_id)
        strays = draw(st.lists(st.tuples(st.sampled_from(STRAY_NAMES), st.sampled_from(AUDIO_KINDS), st.booleans()),
                               max_size=3, unique_by=lambda s: (s[0], s[2])))
        ch = Chapter(spk, chap, utts, strays, crlf=draw(st.booleans()), bom=draw(st.integers(0, 3)) == 0)
        ch.order = draw(st.permutations(range(len(utts))))
        chapters.append(ch)
    return chapters


def norm(text: str) -> str:
    return " ".join(text.split()).lower()


@dataclass
class Expect:
    """What the test knows of one file it wrote: the reasons true of it, or that it must be a
    row (``text``, and ``pool`` the good content it holds)."""

    reasons: set[str]
    text: str | None = None
    pool: int | None = None


def write_tree(root: Path, chapters: list[Chapter]) -> tuple[dict[str, Expect], Counter[tuple[str, str]]]:
    """Write ``chapters`` under ``root/LibriSpeech/train`` and work out, from what was written,
    what the manifest must make of each file. Returns ``{path as the tables show it: Expect}``
    and how many transcript lines each ``(chapter dir, utt_id)`` has."""
    sdir = root / "LibriSpeech" / SUBSET
    next_good = iter(range(POOL))
    files: dict[str, Expect] = {}
    line_count: Counter[tuple[str, str]] = Counter()
    # transcript lines in the order the stage reads them: chapters by (speaker, chapter) name
    # (os.walk, sorted at each level), each file's lines in order
    lines_of: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for ch in chapters:
        seq = [(ch.utts[i].utt_id, ch.utts[i].line) for i in ch.order if ch.utts[i].line]
        seq += [(u.utt_id, f"{u.utt_id} {u.repeat_text}") for u in ch.utts if u.repeat_text]
        lines_of[ch.spk, ch.chap] = seq
    owner: dict[str, tuple[tuple[str, str], int]] = {}  # id -> (chapter, line index) of its first line with text
    for key in sorted(lines_of):
        for i, (utt_id, line) in enumerate(lines_of[key]):
            if len(line.lstrip("\ufeff").split(None, 1)) == 2:
                owner.setdefault(utt_id, (key, i))
    for ch in chapters:
        cdir = sdir / ch.spk / ch.chap
        cdir.mkdir(parents=True)
        eol = "\r\n" if ch.crlf else "\n"
        body = "".join(line + eol for _, line in lines_of[ch.spk, ch.chap])
        (cdir / f"{ch.spk}-{ch.chap}.trans.txt").write_bytes((("\ufeff" if ch.bom else "") + body).encode())
        line_count.update((str(cdir), utt_id) for utt_id, _ in lines_of[ch.spk, ch.chap])
        for u in ch.utts:
            if u.ext is None:
                continue
            k = next(next_good) if u.audio == "good" else None
            path = cdir / f"{u.utt_id}{u.ext}"
            path.write_bytes(audio_bytes(u.audio, k or 0))
            files[str(path)] = expect(u, k, (ch.spk, ch.chap), lines_of[ch.spk, ch.chap], owner)
        for name, kind, spk_level in ch.strays:
            where = sdir / ch.spk if spk_level else cdir
            path = os.path.join(os.fsencode(where), name) if isinstance(name, bytes) else where / name
            if os.path.exists(path):
                continue
            try:
                with open(path, "wb") as f:
                    f.write(audio_bytes(kind, 0))
            except OSError:  # a filesystem that refuses the name (a tab, a newline, non-UTF-8 bytes)
                continue
            if isinstance(name, bytes):
                files[os.fsencode(path).decode("utf-8", "backslashreplace")] = Expect({"unsupported_format"})
            elif name.endswith(".trans.txt"):
                continue
            else:
                files[str(path)] = Expect({"no_transcript"} if name.endswith(".flac") else {"unsupported_format"})
    return files, line_count


def expect(u: Utt, k: int | None, key: tuple[str, str], lines: list[tuple[str, str]],
           owner: dict[str, tuple[tuple[str, str], int]]) -> Expect:
    """What is true of utterance ``u``'s audio file in chapter ``key`` whose transcript lines are ``lines``."""
    if u.ext != ".flac":
        return Expect({"unsupported_format"})
    mine = [(i, line.lstrip("\ufeff").split(None, 1)) for i, (utt_id, line) in enumerate(lines) if utt_id == u.utt_id]
    if not mine:
        return Expect({"no_transcript"})
    reasons = set()
    if any(len(parts) < 2 for _, parts in mine):
        reasons.add("empty_transcript")
    with_text = [(i, parts[1]) for i, parts in mine if len(parts) == 2]
    first = next((text for i, text in with_text if owner[u.utt_id] == (key, i)), None)
    if first is None:  # the id's first line with text is in another chapter
        return Expect(reasons | ({"duplicate_id"} if with_text else set()))
    # a second line for the id in this chapter is its own reject; the file goes with the first
    text = norm(first)
    if set(text) - set(CFG.allowed_chars) - {" "}:
        reasons.add("bad_characters")
    if u.audio != "good":
        reasons |= AUDIO_REASONS[u.audio]
    elif CFG.model_frames(good_samples(k)[1]) < ctc_min_frames(text):
        reasons.add("too_short_for_label")
    if reasons:
        return Expect(reasons)
    return Expect(set(), text=text, pool=k)


def check(root: Path, chapters: list[Chapter], codec: str) -> None:
    """Write the tree, run the manifest, check the invariant (see the module docstring)."""
    files, line_count = write_tree(root / "raw", chapters)
    must_accept = {p: e for p, e in files.items() if e.text is not None}
    out = root / "man"
    cfg = dataclasses.replace(CFG, audio_codec=codec)
    if not must_accept:
        event("rows: none (the stage refuses an empty split)")
        with pytest.raises(ValueError, match="no usable utterance"):
            write_manifests(root / "raw", {"train": [SUBSET]}, out, cfg)
        return
    write_manifests(root / "raw", {"train": [SUBSET]}, out, cfg)
    rows = read_manifest(out / "train.parquet")
    rej = pd.read_parquet(out / "rejects.parquet")
    event(f"rows: {min(len(rows), 3)}{'+' if len(rows) >= 3 else ''}")  # --hypothesis-show-statistics
    for reason in set(rej["reason"]):
        event(f"reject: {reason}")

    # every file exactly once: a row or a reject
    claimed = rows["audio_filepath"].tolist() + [p for p in rej["path"] if p in files]
    assert sorted(claimed) == sorted(files), "files lost or counted twice"
    # nothing let in, nothing lost: the rows are exactly the good utterances
    assert sorted(rows["audio_filepath"]) == sorted(must_accept)
    # every reject has a known reason and a detail; a file's reason is true of it
    assert set(rej["reason"]) <= set(REASONS) and (rej["detail"].str.len() > 0).all()
    for path, reason, detail in zip(rej["path"], rej["reason"], rej["detail"]):
        if path in files:
            assert reason in files[path].reasons, f"{path!r}: {reason} ({detail}); true: {files[path].reasons}"
    # every transcript line is a row or a reject too (a file and its line share one)
    # (a line's own reject names its audio path, its transcript file, or that file:line)
    outcomes = Counter((os.path.dirname(p.split(".trans.txt")[0]), u)
                       for u, p in zip(rows["utt_id"].tolist() + rej["utt_id"].tolist(),
                                       rows["audio_filepath"].tolist() + rej["path"].tolist()))
    for (cdir, utt_id), n in line_count.items():
        assert outcomes[cdir, utt_id] >= n, f"{cdir}: {n} lines of {utt_id}, {outcomes[cdir, utt_id]} outcomes"
    # each row: its own file's audio (decoded from the manifest) and its own line's text
    audio = ManifestAudio(out / "train.parquet", 16000)
    for i, (path, text, dur, utt_id) in enumerate(zip(rows["audio_filepath"], rows["text"], rows["duration"],
                                                       rows["utt_id"])):
        digest, frames = good_samples(must_accept[path].pool)
        assert samples_hash(audio[i]) == digest, f"{path}: another file's audio"
        assert text == must_accept[path].text and f"{utt_id}.flac" == Path(path).name, path
        assert dur == round(frames / 16000, 6)


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(chapters=trees(), codec=st.sampled_from(["flac", "pcm16"]))
def test_every_file_is_one_row_or_one_true_reject_and_rows_carry_their_own_audio_and_text(chapters, codec):
    with tempfile.TemporaryDirectory(prefix="asrflow-manifest-prop-") as root:
        check(Path(root), chapters, codec)


def test_the_generator_reaches_every_kind_of_input():
    """The strategy's draws cover what the module docstring promises (a guard against a
    generator that silently stopped producing some kind of input)."""
    seen: set[str] = set()

    @settings(max_examples=120, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(trees())
    def collect(chapters: list[Chapter]) -> None:
        for ch in chapters:
            seen.update(f"audio:{u.audio}" for u in ch.utts if u.ext)
            seen.update(f"ext:{u.ext}" for u in ch.utts)
            seen.update(f"stray:{n!r}" for n, _, _ in ch.strays)
            seen.update(["bom-file"] * ch.bom + ["crlf"] * ch.crlf + ["repeat"] * any(u.repeat_text for u in ch.utts))
            ids = [u.utt_id for u in ch.utts]
            seen.update("line:" + ("tab" if "\t" in u.line.split(" ")[0] else "bom" if u.line.startswith("\ufeff")
                                   else "empty" if u.line and not u.text else "none" if not u.line else "text")
                        for u in ch.utts)
            if any(not i.startswith(f"{ch.spk}-{ch.chap}-") for i in ids):
                seen.add("dup-across-chapters")

    collect()
    wanted = ({f"audio:{k}" for k in AUDIO_KINDS} | {f"ext:{e}" for e in EXTENSIONS}
              | {f"stray:{n!r}" for n in STRAY_NAMES}
              | {"bom-file", "crlf", "repeat", "dup-across-chapters"}
              | {f"line:{k}" for k in ("tab", "bom", "empty", "none", "text")})
    assert wanted <= seen, sorted(wanted - seen)

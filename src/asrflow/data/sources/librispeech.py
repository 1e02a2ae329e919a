"""LibriSpeech: OpenSLR's archives (fetched by :mod:`asrflow.data.librispeech`) and their layout.

``LibriSpeech/<subset>/<speaker>/<chapter>/`` holds one FLAC per utterance and a
``<speaker>-<chapter>.trans.txt`` of ``<utt-id> <TEXT>`` lines. The embedded ``synth``
corpus is written in the same layout, so it is read by the same lister.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from asrflow.data.archives import extract_archives
from asrflow.data.sources import Listing, Utterance


def fetch(entry: dict[str, Any], subsets: list[str], out_dir: Path, store: Path, *, seed: int, sample_rate: int,
          log: Callable[[str], None]) -> dict[str, Any]:
    from asrflow.data.librispeech import download_librispeech
    sizes = download_librispeech(subsets, entry["mirrors"], store, out_dir, lm_corpus=entry["lm_corpus"],
                                 checksums=entry["checksums"], timeout=entry["timeout_s"], retries=entry["retries"])
    return {"files": len(sizes), "gigabytes": round(sum(sizes.values()) / 1e9, 3)}


def open_source(archive_dir: Path, raw_dir: Path, max_gb: float, log: Callable[[str], None]) -> tuple[Path, int]:
    """Extract the archives (each may write only ``LibriSpeech/<its subset>/``): the root to
    list, and how many archives were extracted now (the others were already)."""
    return raw_dir, sum(extract_archives(archive_dir, raw_dir, log=log, max_gb=max_gb).values())


def shown_path(path: str) -> str:
    """``path`` as the tables store it: a name that is not valid UTF-8 (os.walk gives its
    bytes as lone surrogates, which Parquet and JSON cannot hold) with ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _walk(subset_dir: Path) -> tuple[list[Path], list[str], list[str]]:
    """Transcript files, every other file of a subset (sorted paths), and the files whose
    path is not valid UTF-8 (transcripts included: they cannot be read as the others), in
    one directory walk."""
    trans, files, undecodable = [], [], []
    for dirpath, dirnames, filenames in os.walk(subset_dir):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if shown_path(path) != path:
                undecodable.append(path)
            elif name.endswith(".trans.txt"):
                trans.append(Path(path))
            else:
                files.append(path)
    return trans, files, undecodable


def read_transcripts(trans_files: list[Path]) -> tuple[list[tuple[str, str, Path]], list[dict[str, str]]]:
    """Every ``(utt_id, text, trans_file)`` of the files, and rejects for malformed lines."""
    rows, rejects = [], []
    for trans in trans_files:
        # a byte-order mark (an editor's, or files concatenated) is not part of the id, and any
        # whitespace run (a tab too) separates id and text: else the line's id names no file and
        # the file is "without a line", two misleading rejects instead of one accepted utterance
        for lineno, line in enumerate(trans.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
            utt_id, text = (line.lstrip("\ufeff").split(None, 1) + ["", ""])[:2]
            if not utt_id:
                continue
            if not text.strip():
                rejects.append({"utt_id": utt_id, "path": f"{trans}:{lineno}", "reason": "empty_transcript",
                                "detail": "transcript line has an id but no text"})
                continue
            rows.append((utt_id, text, trans))
    return rows, rejects



def list_split(raw_dir: Path, split: str, subsets: list[str]) -> Listing:
    """A split's utterances: each transcript line with the FLAC beside its transcript file.

    An utterance is its line and the audio next to that line's file: a chapter's audio is never
    paired with another chapter's line, whatever the ids say. Inputs are the files found
    (transcripts aside); a file no line names is rejected (``no_transcript``), a line whose
    file is absent too (``missing_audio``), and so are malformed lines, repeated ids and files
    in another format (``unsupported_format``).
    """
    out = Listing()
    for subset in subsets:
        sdir = Path(raw_dir) / "LibriSpeech" / subset
        if not sdir.is_dir():
            raise FileNotFoundError(f"subset '{subset}' of split '{split}' not found at {sdir}")
        trans_files, files, undecodable = _walk(sdir)
        for f in undecodable:  # rejected as they are found: no table can hold such a path as it is
            out.rejects.append({"split": split, "subset": subset, "utt_id": Path(shown_path(f)).name.split(".")[0],
                            "path": shown_path(f), "reason": "unsupported_format",
                            "detail": "path is not valid UTF-8 (its bytes shown as \\xNN): rename it"})
        out.inputs += [shown_path(f) for f in undecodable]
        rows, bad = read_transcripts(trans_files)
        # an utterance is its transcript line and the audio beside that transcript file: a
        # chapter's audio is never paired with another chapter's line, whatever the ids say
        present, unused = set(files), set(files)
        for r in bad:  # a malformed line's audio is rejected with it (the line named in the detail)
            line = r["path"]
            audio = os.path.join(os.path.dirname(line.rsplit(":", 1)[0]), f"{r['utt_id']}.flac")
            if audio in unused:
                unused.discard(audio)
                r = {**r, "path": audio, "detail": f"{r['detail']} ({line})"}
            out.rejects.append({"split": split, "subset": subset, **r})
        by_stem: dict[str, list[str]] = {}
        for f in files:
            by_stem.setdefault(os.path.join(os.path.dirname(f), Path(f).name.split(".")[0]), []).append(f)
        first: dict[str, str] = {}  # utt_id -> where its first line is
        for utt_id, text, trans in rows:
            audio = str(trans.parent / f"{utt_id}.flac")
            reject = {"split": split, "subset": subset, "utt_id": utt_id, "path": audio}
            if utt_id in first:
                own = audio in unused  # a second chapter's file with the same id: rejected with its line
                unused.discard(audio)
                out.rejects.append({**reject, "path": audio if own else f"{trans}", "reason": "duplicate_id",
                                "detail": f"{utt_id} in {trans} repeats the id of {first[utt_id]}"})
                continue
            first[utt_id] = str(trans)
            if audio in present and audio not in unused:
                # its file went with an earlier line of this id in the same file, one without
                # text: this line repeats the id (calling the file missing would be untrue, and
                # its path would count the file twice)
                out.rejects.append({**reject, "path": f"{trans}", "reason": "duplicate_id",
                                "detail": f"{utt_id} in {trans} repeats the id of a line with no text there"})
                continue
            if audio not in unused:
                others = [f for f in by_stem.get(str(trans.parent / utt_id), []) if f in unused]
                if others:  # e.g. x.wav or x.FLAC: there, but not in the format the pipeline reads
                    unused.discard(others[0])
                    out.rejects.append({**reject, "path": others[0], "reason": "unsupported_format",
                                    "detail": f"{Path(others[0]).name}: only .flac audio is read"})
                else:
                    out.rejects.append({**reject, "reason": "missing_audio", "detail": f"listed in {trans}"})
                continue
            unused.discard(audio)
            spk, chap, _ = (utt_id.split("-") + ["", "", ""])[:3]
            out.utterances.append(Utterance(utt_id, text, audio, subset, key=audio, speaker=spk, chapter=chap,
                                            where=str(trans)))
        for f in sorted(unused):
            reject = {"split": split, "subset": subset, "utt_id": Path(f).name.split(".")[0], "path": f}
            if f.endswith(".flac"):
                out.rejects.append({**reject, "reason": "no_transcript", "detail": "no line in the chapter's trans.txt"})
            else:
                out.rejects.append({**reject, "reason": "unsupported_format",
                                "detail": f"{Path(f).name}: only .flac audio and .trans.txt transcripts are read"})
        out.inputs += files
    return out

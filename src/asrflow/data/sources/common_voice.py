"""Common Voice: a release you have downloaded (its download needs a sign-in), as the archive
(``cv-corpus-<version>-<lang>.tar.gz``) or the folder it unpacks to (``<...>/<lang>/``, holding
``train.tsv``, ``dev.tsv``, ``test.tsv``, ``validated.tsv``... and ``clips/*.mp3``).

The dataset's ``path`` names either. An archive is linked (or copied) into the download
stage's directory and its SHA-256 recorded, then extracted by the manifest stage like
every archive (one top folder, nothing outside it); a folder is read where it lies
(:mod:`asrflow.data.sources.local`). A subset is a TSV's name (``train`` for
``train.tsv``); its rows give ``client_id`` (the speaker), ``path`` (the clip, under
``clips/``) and ``sentence``. Sentences are written text, so the source removes their
punctuation (a mark becomes a space; the apostrophe stays, ``’`` as ``'``) before the
language's rule applies: digits and letters outside the language's set still reject a
row. Clips are MP3 at 32 or 48 kHz: set ``resample: true`` and they
are decoded and resampled once, in the manifest stage, into the Parquet's pcm16 audio.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import unicodedata
from pathlib import Path
from typing import Any, Callable

from asrflow.common.files import write_text
from asrflow.data.archives import Layout, extract_archives, hash_file, link_or_copy, write_checksums
from asrflow.data.sources import Listing, Utterance
from asrflow.data.sources.local import SOURCE_JSON, record

ARCHIVES = (".tar.gz", ".tgz", ".tar")
COLUMNS = ("client_id", "path", "sentence")


def fetch(entry: dict[str, Any], subsets: list[str], out_dir: Path, store: Path, *, seed: int, sample_rate: int,
          log: Callable[[str], None]) -> dict[str, Any]:
    path = Path(entry["path"]).expanduser()
    if path.is_file() and path.name.endswith(ARCHIVES):
        out_dir.mkdir(parents=True, exist_ok=True)
        link_or_copy(path, out_dir / path.name)
        log(f"hashing {path}")
        write_checksums(out_dir, {path.name: hash_file(out_dir / path.name, ["sha256"])})
        write_text(out_dir / SOURCE_JSON, json.dumps({"source": "common_voice", "archive": path.name,
                                                      "subsets": subsets}, indent=2) + "\n")
        return {"files": 1, "gigabytes": round(path.stat().st_size / 1e9, 3)}
    if not path.is_dir():
        raise FileNotFoundError(f"common_voice: {path} (the dataset's 'path') is neither a release archive "
                                f"({', '.join(ARCHIVES)}) nor a folder")
    tsvs = [_tsv(path, s) for s in subsets]
    return record(entry, subsets, out_dir, tsvs)


def unpunctuate(sentence: str) -> str:
    """A written sentence's punctuation removed (each mark a space), apostrophes kept."""
    sentence = sentence.replace("\u2019", "'")
    return "".join(" " if unicodedata.category(ch)[0] == "P" and ch != "'" else ch for ch in sentence)


def _tsv(root: Path, subset: str) -> Path:
    f = root / f"{subset}.tsv"
    if not f.is_file():
        raise FileNotFoundError(f"common_voice subset '{subset}': {f} not found")
    return f


def open_source(archive_dir: Path, raw_dir: Path, max_gb: float, log: Callable[[str], None]) -> tuple[Path, int]:
    info = json.loads((archive_dir / SOURCE_JSON).read_text(encoding="utf-8"))
    if "archive" not in info:
        return Path(info["path"]), 0
    done = extract_archives(archive_dir, raw_dir, log=log, max_gb=max_gb, depth=1, layout=Layout(((),)))
    # the release's language folder: the one holding the first subset's TSV
    first = info["subsets"][0]
    found = sorted(raw_dir.glob(f"*/*/{first}.tsv")) + sorted(raw_dir.glob(f"*/{first}.tsv"))
    if not found:
        raise FileNotFoundError(f"{archive_dir / info['archive']}: no {first}.tsv in the extracted release")
    return found[0].parent, sum(done.values())


def list_split(root: Path, split: str, subsets: list[str]) -> Listing:
    out = Listing()
    csv.field_size_limit(sys.maxsize)
    clips = root / "clips"
    for subset in subsets:
        tsv = _tsv(root, subset)
        with open(tsv, encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, [])
            cols = {name: i for i, name in enumerate(header)}
            missing = [c for c in COLUMNS if c not in cols]
            if missing:
                raise ValueError(f"{tsv}: no column {', '.join(missing)} in its header (a Common Voice TSV has "
                                 f"{', '.join(COLUMNS)}, ...)")
            for n, row in enumerate(reader, 2):
                if not any(c.strip() for c in row):
                    continue
                key = f"{tsv}:{n}"
                out.inputs.append(key)
                if len(row) < len(header):
                    out.reject(split, subset, "", key, "malformed_line",
                               f"{len(row)} fields, the header has {len(header)}", key)
                    continue
                name = row[cols["path"]]
                utt_id = os.path.splitext(name)[0]
                if "/" in name or "\\" in name or name in ("", ".", ".."):
                    out.reject(split, subset, utt_id, name, "outside_corpus", f"{key}: a clip name, not a path, "
                               "is expected", key)
                    continue
                audio = clips / name
                if not audio.is_file():
                    out.reject(split, subset, utt_id, str(audio), "missing_audio", f"listed at {key}", key)
                    continue
                out.utterances.append(Utterance(utt_id, unpunctuate(row[cols["sentence"]]), str(audio), subset, key,
                                                speaker=row[cols["client_id"]], where=key))
    return out

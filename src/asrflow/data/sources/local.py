"""Corpora you already have, read where they lie: ``folder``, ``nemo`` and ``kaldi``.

The download stage does not copy them: it checks that each split's list exists and writes
``source.json`` (the folder, how to read it, and a fingerprint of the lists and of the files
under the folder), which is what the manifest stage reads. Orchestrators cannot see files
outside the repository change, so after editing a corpus in place, re-run the download stage
(``snakemake -R download ...``, ``dvc repro -f download``): the fingerprint then changes and
everything after it runs again.

Each source's inputs are its list lines (a TSV row, a JSON line, a Kaldi ``text`` line): each
ends as one manifest row or one reject whose key is ``<list file>:<line>``.

- ``folder``: ``<path>/<subset>.tsv`` (tab) or ``.csv`` (comma): ``path, text[, speaker]`` per
  row, an optional header row ``path, text...``; audio paths are relative to the folder and
  may not leave it (``outside_corpus``). The utterance id is the path without extension.
- ``nemo``: ``<path>/<subset>.json`` or ``.jsonl``, NeMo's manifest lines ``{"audio_filepath",
  "duration", "text"}`` with optional ``offset`` (seconds; a segment of the file) and
  ``speaker``/``id``; relative audio paths are relative to the manifest file.
- ``kaldi``: ``<path>/<subset>/`` holding ``wav.scp``, ``text``, optionally ``utt2spk`` and
  ``segments``. A ``wav.scp`` entry that is a command (``<rec> sox x.flac -t wav - |``) is
  refused (``pipe_refused``) unless the dataset sets ``allow_pipes: true``; then it runs once,
  without a shell (``|`` between commands is a pipe; redirections, ``;``, ``&&``, ``$(...)``
  and backquotes are refused), its output kept as a WAV under the raw folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

from asrflow.common.files import write_text
from asrflow.data.sources import Listing, Utterance

SOURCE_JSON = "source.json"
LISTS = {"folder": (".tsv", ".csv"), "nemo": (".json", ".jsonl")}
KALDI_FILES = ("wav.scp", "text")
SHELL_ONLY = (">", "<", ">>", "2>", "&>", ";", "&&", "||", "&")
PIPE_TIMEOUT_S = 600


def list_files(source: str, root: Path, subset: str) -> list[Path]:
    """The files a subset is read from (raising FileNotFoundError naming what is missing)."""
    if source == "kaldi":
        d = root / subset
        missing = [n for n in KALDI_FILES if not (d / n).is_file()]
        if missing:
            raise FileNotFoundError(f"kaldi subset '{subset}': {', '.join(missing)} not found in {d}")
        return [d / n for n in (*KALDI_FILES, "utt2spk", "segments") if (d / n).is_file()]
    for ext in LISTS[source]:
        if (root / f"{subset}{ext}").is_file():
            return [root / f"{subset}{ext}"]
    raise FileNotFoundError(f"{source} subset '{subset}': none of "
                            f"{', '.join(str(root / (subset + e)) for e in LISTS[source])} exists")


def fingerprint(root: Path, lists: list[Path]) -> dict[str, Any]:
    """A digest of the lists' bytes and of every file's path, size and modification time under
    ``root``: what changes when the corpus is edited in place."""
    h, files, size = hashlib.sha256(), 0, 0
    for f in sorted(lists):
        h.update(f"{f}\0".encode() + f.read_bytes())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            h.update(f"{os.path.join(dirpath, name)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
            files, size = files + 1, size + st.st_size
    return {"sha256": h.hexdigest(), "files": files, "bytes": size}


def record(entry: dict[str, Any], subsets: list[str], out_dir: Path, lists: list[Path]) -> dict[str, Any]:
    """Write ``out_dir/source.json`` for a corpus read in place; the download stage's metrics."""
    root = Path(entry["path"]).expanduser().resolve()
    fp = fingerprint(root, lists)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"source": entry["source"], "path": str(root), "subsets": subsets, "fingerprint": fp["sha256"],
            **{k: v for k, v in entry.items() if k in ("allow_pipes",)}}
    write_text(out_dir / SOURCE_JSON, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return {"files": fp["files"], "gigabytes": round(fp["bytes"] / 1e9, 3)}


def fetch(entry: dict[str, Any], subsets: list[str], out_dir: Path, store: Path, *, seed: int, sample_rate: int,
          log: Callable[[str], None]) -> dict[str, Any]:
    root = Path(entry["path"]).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{entry['source']} corpus folder {root} (the dataset's 'path') does not exist")
    lists = [f for s in subsets for f in list_files(entry["source"], root, s)]
    log(f"{entry['source']} corpus at {root}: {len(lists)} list files for {len(subsets)} subsets")
    return record(entry, subsets, out_dir, lists)


def open_source(archive_dir: Path, raw_dir: Path, max_gb: float, log: Callable[[str], None]) -> tuple[dict, int]:
    path = archive_dir / SOURCE_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the download stage for this dataset first")
    info = json.loads(path.read_text(encoding="utf-8"))
    return {**info, "raw": str(raw_dir)}, 0


def list_split(opened: dict[str, Any], split: str, subsets: list[str]) -> Listing:
    out = Listing()
    root = Path(opened["path"])
    for subset in subsets:
        files = list_files(opened["source"], root, subset)
        if opened["source"] == "folder":
            _list_folder(files[0], root, split, subset, out)
        elif opened["source"] == "nemo":
            _list_nemo(files[0], split, subset, out)
        else:
            _list_kaldi(root / subset, split, subset, out, opened.get("allow_pipes", False), Path(opened["raw"]))
    return out


def _lines(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _list_folder(lst: Path, root: Path, split: str, subset: str, out: Listing) -> None:
    delimiter = "\t" if lst.suffix == ".tsv" else ","
    rows = list(csv.reader(lst.read_text(encoding="utf-8-sig", errors="replace").splitlines(), delimiter=delimiter))
    real_root = root.resolve()
    for n, row in enumerate(rows, 1):
        if not any(c.strip() for c in row):
            continue
        key = f"{lst}:{n}"
        out.inputs.append(key)
        if n == 1 and row[0].strip().lower() in ("path", "audio", "audio_filepath", "file"):
            out.inputs.pop()  # the header row
            continue
        if len(row) < 2:
            out.reject(split, subset, "", key, "malformed_line",
                       f"{len(row)} field(s); a row is path{delimiter!r}text[{delimiter!r}speaker]", key)
            continue
        rel, text, speaker = row[0].strip(), row[1], (row[2].strip() if len(row) > 2 else "")
        utt_id = os.path.splitext(rel)[0].replace(os.sep, "-").replace("/", "-")
        audio = (root / rel).resolve()
        if os.path.isabs(rel) or not audio.is_relative_to(real_root):
            out.reject(split, subset, utt_id, rel, "outside_corpus", f"{key}: {rel} is not inside {root}", key)
            continue
        if not audio.is_file():
            out.reject(split, subset, utt_id, str(audio), "missing_audio", f"listed at {key}", key)
            continue
        out.utterances.append(Utterance(utt_id, text, str(audio), subset, key, speaker=speaker, where=key))


def _list_nemo(lst: Path, split: str, subset: str, out: Listing) -> None:
    for n, line in _lines(lst):
        key = f"{lst}:{n}"
        out.inputs.append(key)
        try:
            row = json.loads(line)
            audio_rel, text = row["audio_filepath"], row["text"]
            offset = float(row.get("offset", 0.0) or 0.0)
            duration = row.get("duration")
            duration = float(duration) if duration is not None else None
            if not isinstance(audio_rel, str) or not isinstance(text, str):
                raise TypeError("audio_filepath and text must be strings")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            out.reject(split, subset, "", key, "malformed_line", f"{type(e).__name__}: {e}"[:200], key)
            continue
        audio = Path(audio_rel) if os.path.isabs(audio_rel) else lst.parent / audio_rel
        utt_id = str(row.get("id") or row.get("utt_id") or Path(audio_rel).stem + (f"-{offset:g}" if offset else ""))
        if not audio.is_file():
            out.reject(split, subset, utt_id, str(audio), "missing_audio", f"listed at {key}", key)
            continue
        speaker = str(row.get("speaker", row.get("speaker_id", "")))
        # a NeMo duration is the whole file's unless an offset says this is a segment
        out.utterances.append(Utterance(utt_id, text, str(audio), subset, key, speaker=speaker, offset=offset,
                                        duration=duration if offset else None, where=key))


def _kv(path: Path) -> dict[str, tuple[int, str]]:
    """``first field -> (line, rest)`` of a Kaldi table (the first line of a repeated key wins)."""
    table: dict[str, tuple[int, str]] = {}
    if path.is_file():
        for n, line in _lines(path):
            k, _, v = line.strip().partition(" ")
            table.setdefault(k, (n, v.strip()))
    return table


def _list_kaldi(d: Path, split: str, subset: str, out: Listing, allow_pipes: bool, raw: Path) -> None:
    wav, spk, segs = _kv(d / "wav.scp"), _kv(d / "utt2spk"), _kv(d / "segments")
    has_segments = (d / "segments").is_file()
    made: dict[str, tuple[str, str]] = {}  # recording -> (wav path, why not)
    for n, line in _lines(d / "text"):
        key = f"{d / 'text'}:{n}"
        out.inputs.append(key)
        utt_id, _, text = line.strip().partition(" ")
        offset, duration, rec = 0.0, None, utt_id
        if has_segments:
            if utt_id not in segs:
                out.reject(split, subset, utt_id, key, "missing_audio", f"{utt_id} has no line in {d / 'segments'}", key)
                continue
            fields = segs[utt_id][1].split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                out.reject(split, subset, utt_id, key, "malformed_line",
                           f"{d / 'segments'}:{segs[utt_id][0]}: '<utt> <recording> <start> <end>' expected", key)
                continue
            offset, duration = start, end - start
        if rec not in wav:
            out.reject(split, subset, utt_id, key, "missing_audio", f"recording {rec} has no line in {d / 'wav.scp'}",
                       key)
            continue
        if rec not in made:
            made[rec] = _recording(wav[rec][1], f"{d / 'wav.scp'}:{wav[rec][0]}", d, rec, allow_pipes, raw / "pipes" / subset)
        path, reason, why = made[rec]
        if reason:
            out.reject(split, subset, utt_id, path, reason, why, key)
            continue
        if not Path(path).is_file():
            out.reject(split, subset, utt_id, path, "missing_audio", f"listed in {d / 'wav.scp'}:{wav[rec][0]}", key)
            continue
        speaker = spk.get(utt_id, (0, ""))[1]
        out.utterances.append(Utterance(utt_id, text, path, subset, key, speaker=speaker, offset=offset,
                                        duration=duration, where=key))


def _recording(spec: str, where: str, d: Path, rec: str, allow_pipes: bool, work: Path) -> tuple[str, str, str]:
    """A wav.scp entry's audio file: ``(path, '', '')``, or ``(what, reason, why not)``."""
    if not spec.endswith("|"):
        if ".ark:" in spec or spec.endswith((".ark", ".scp")):
            return spec, "unsupported_format", f"{where}: Kaldi archives (ark) are not read; write {rec} as a file"
        path = Path(spec)
        return str(path if path.is_absolute() else d / path), "", ""
    command = spec[:-1].strip()
    if not allow_pipes:
        return where, "pipe_refused", (f"{where}: a command ({command[:80]}): set the dataset's allow_pipes: true "
                                       "to run wav.scp commands (each runs once, without a shell)")
    try:
        words = shlex.split(command)
    except ValueError as e:
        return where, "pipe_failed", f"{where}: cannot parse the command ({e})"
    bad = [w for w in words if w in SHELL_ONLY or w.startswith(("$(", "`", ">", "<", "2>"))]
    if bad:
        return where, "pipe_refused", f"{where}: {bad[0]!r} needs a shell, and commands run without one"
    stages, cur = [], []
    for w in words:
        if w == "|":
            stages.append(cur)
            cur = []
        else:
            cur.append(w)
    stages.append(cur)
    if any(not s for s in stages):
        return where, "pipe_failed", f"{where}: an empty command in the pipeline"
    work.mkdir(parents=True, exist_ok=True)
    target, tmp = work / f"{rec}.wav", work / f".{rec}.wav.tmp"
    procs: list[subprocess.Popen] = []
    errs = [tempfile.TemporaryFile() for _ in stages]
    try:
        with open(tmp, "wb") as sink:
            prev = None
            for i, argv in enumerate(stages):
                last = i == len(stages) - 1
                proc = subprocess.Popen(argv, stdin=prev if prev is not None else subprocess.DEVNULL,
                                        stdout=sink if last else subprocess.PIPE, stderr=errs[i], cwd=d)
                if prev is not None:
                    prev.close()  # the next command owns it now
                prev = proc.stdout
                procs.append(proc)
            for proc in procs:
                proc.wait(timeout=PIPE_TIMEOUT_S)
        failed = [(proc, err) for proc, err in zip(procs, errs) if proc.returncode != 0]
        if failed or tmp.stat().st_size == 0:
            tmp.unlink(missing_ok=True)
            if not failed:
                return where, "pipe_failed", f"{where}: the command wrote no audio"
            proc, err = failed[0]
            err.seek(0)
            msg = err.read().decode("utf-8", "replace").strip().splitlines()
            return where, "pipe_failed", (f"{where}: {proc.args[0]} exited with status {proc.returncode}"
                                          + (f": {msg[-1][:160]}" if msg else ""))
    except (OSError, subprocess.TimeoutExpired) as e:
        for proc in procs:
            proc.kill()
        tmp.unlink(missing_ok=True)
        return where, "pipe_failed", f"{where}: the command did not run: {e}"[:300]
    finally:
        for err in errs:
            err.close()
    os.replace(tmp, target)
    return str(target), "", ""

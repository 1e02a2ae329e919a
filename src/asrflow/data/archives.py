"""Archives: verified resumable fetches, deterministic packing, safe extraction.

The download stage's product is a directory of archives (``data/<ds>/archives/``) and a
``checksums.json`` naming their sums; DVC tracks those few large files, never the
hundreds of thousands of extracted ones. The manifest stage extracts them into
``data/<ds>/raw/`` (a working tree no orchestrator tracks) and stamps each extraction
with its archive's checksum, so unchanged archives are not extracted again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from asrflow.common import progress

CHUNK = 1 << 20
ALGOS = ("md5", "sha256")
STAMP_DIR = ".extracted"


class DownloadError(RuntimeError):
    """A download, verification or extraction failure; the message names the file."""


def parse_sums(spec: str | dict[str, str]) -> dict[str, str]:
    """``"md5:<hex>"`` / ``"sha256:<hex>"`` (params.yaml) or a dict -> ``{algo: hex}``."""
    if isinstance(spec, dict):
        sums = dict(spec)
    else:
        algo, sep, digest = spec.partition(":")
        if not sep:
            raise DownloadError(f"checksum {spec!r}: expected '<algo>:<hex>' with algo one of {ALGOS}")
        sums = {algo: digest}
    for algo, digest in sums.items():
        if algo not in ALGOS:
            raise DownloadError(f"checksum algorithm {algo!r} not supported; use one of {ALGOS}")
        if len(digest) != hashlib.new(algo).digest_size * 2 or set(digest.lower()) - set("0123456789abcdef"):
            raise DownloadError(f"checksum {algo}:{digest!r} is not a {algo} hex digest")
    return {a: d.lower() for a, d in sums.items()}


def hash_file(path: Path, algos: Iterable[str] = ALGOS, desc: str | None = None) -> dict[str, str]:
    """Digests of ``path`` for each algorithm, in one read."""
    hashers = {a: hashlib.new(a) for a in algos}
    size = path.stat().st_size
    with open(path, "rb") as f, _bar(size, 0, f"verify {desc or path.name}", size > 256 * CHUNK) as bar:
        for block in iter(lambda: f.read(CHUNK), b""):
            for h in hashers.values():
                h.update(block)
            bar.update(len(block))
    return {a: h.hexdigest() for a, h in hashers.items()}


def _bar(total: int | None, initial: int, desc: str, show: bool = True) -> tqdm:
    """A byte progress bar (size, rate, ETA) on stderr; sparse when stderr is a log file."""
    return progress.bar(total, desc, unit="B", initial=initial, show=show, unit_scale=True, unit_divisor=1024)


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def verified(path: Path, sums: dict[str, str]) -> bool:
    """True if ``path`` matches ``sums``; a stamp (size, mtime, sums) spares re-hashing a
    file already verified and untouched since."""
    if not path.exists():
        return False
    st, stamp = path.stat(), _stamp_path(path)
    if stamp.exists():
        try:
            s = json.loads(stamp.read_text())
            if s["size"] == st.st_size and s["mtime_ns"] == st.st_mtime_ns and \
                    all(s["sums"].get(a) == d for a, d in sums.items()):
                return True
        except (ValueError, KeyError):
            pass
    got = hash_file(path, sums)
    if got != sums:
        return False
    _write_stamp(path, got)
    return True


def _write_stamp(path: Path, sums: dict[str, str]) -> None:
    st = path.stat()
    _stamp_path(path).write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sums": sums}))


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append ``url``'s bytes to ``part``, resuming with an HTTP Range request if it exists."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing past what we hold: the transfer was complete; verify it
            return
        raise
    with resp:
        if have and resp.status != 206:  # server ignored Range: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = int(length) + have if length else None
        with open(part, "ab" if have else "wb") as f, _bar(total, have, part.name.removesuffix(".part")) as bar:
            for block in iter(lambda: resp.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"{url}: transfer ended at {part.stat().st_size} of {total} bytes")


def fetch_verified(name: str, urls: Iterable[str], store: Path, sums: dict[str, str],
                   timeout: float = 60.0, retries: int = 3) -> Path:
    """``store/name``, fetched from the first URL that works and checked against ``sums``.

    Bytes go to ``name.part`` (kept and resumed with HTTP Range across attempts, mirrors
    and runs); only a verified file is renamed to ``name``. A file already there and
    verified is not fetched again. A mismatch moves the file to ``name.bad`` and raises
    :class:`DownloadError` naming the file, the URL and both sums; so does failing on every URL.
    """
    store.mkdir(parents=True, exist_ok=True)
    final = store / name
    if verified(final, sums):
        return final
    part = final.with_name(name + ".part")
    errors = []
    for url in urls:
        for _ in range(retries):
            try:
                _fetch(url, part, timeout)
                break
            except (OSError, urllib.error.URLError, DownloadError) as e:
                errors.append(f"{url}: {e}")
        else:
            continue
        got = hash_file(part, sums, desc=name)
        bad = [a for a in sums if got[a] != sums[a]]
        if bad:
            dest = final.with_name(name + ".bad")
            os.replace(part, dest)
            a = bad[0]
            raise DownloadError(f"{name}: checksum mismatch from {url}: expected {a} {sums[a]}, got {got[a]}; "
                                f"the file was moved aside to {dest} and not extracted")
        os.replace(part, final)
        _write_stamp(final, got)
        return final
    raise DownloadError(f"{name}: every mirror failed:\n  " + "\n  ".join(errors))


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` (no second copy of a 30 GB archive); copy across devices."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_checksums(archive_dir: Path, sums: dict[str, dict[str, str]]) -> None:
    """``archive_dir/checksums.json``: the sums every later stage trusts for these files."""
    (archive_dir / "checksums.json").write_text(json.dumps(sums, indent=1, sort_keys=True) + "\n")


def read_checksums(archive_dir: Path) -> dict[str, dict[str, str]]:
    path = archive_dir / "checksums.json"
    if not path.exists():
        raise DownloadError(f"{path} is missing: run the download stage first")
    return json.loads(path.read_text())


# --- packing (synth) -----------------------------------------------------------------

def pack_tree(root: Path, members: Iterable[Path], out: Path) -> None:
    """A byte-reproducible ``.tar.gz`` of ``members`` (paths under ``root``): sorted, zero
    timestamps and owners, fixed modes. FLAC does not compress, so gzip runs at level 1."""
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(members, key=lambda p: p.relative_to(root).as_posix()):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = path.stat().st_size, 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    os.replace(tmp, out)


def gzip_text(lines: Iterable[str], out: Path) -> None:
    """A byte-reproducible gzip text file, one line per item."""
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        for line in lines:
            gz.write((line + "\n").encode("utf-8"))


# --- extraction ----------------------------------------------------------------------

def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        raise DownloadError(f"{archive}: refusing absolute path member {name!r}")
    if ".." in Path(name).parts:
        raise DownloadError(f"{archive}: refusing member with '..' {name!r}")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive}: refusing link or special member {name!r}")


def safe_extract(archive: Path, dest: Path, depth: int = 2) -> None:
    """Extract a .tar.gz into ``dest`` after checking every member.

    Absolute paths, ``..``, links and devices are refused before anything is written.
    Extraction goes to a temporary directory inside ``dest``; then each entry ``depth``
    levels down (``LibriSpeech/<subset>``) is renamed into place, replacing an older copy
    whole, while shared parents (``LibriSpeech/``) are merged. A killed extraction leaves
    only the hidden temporary directory, never a half subset at its final place.
    """
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            _check_member(m, archive)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
        try:
            tar.extractall(tmp, members=members, filter="data")
            _move_into(tmp, dest, depth)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _move_into(src: Path, dst: Path, depth: int) -> None:
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if depth > 1 and entry.is_dir() and target.is_dir():
            _move_into(entry, target, depth - 1)
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(entry, target)


def extract_archives(archive_dir: Path, raw_dir: Path, log=print) -> dict[str, bool]:
    """Extract every ``.tar.gz`` listed in ``archive_dir/checksums.json`` into ``raw_dir``.

    Each extraction is stamped (``raw_dir/.extracted/<archive>``) with the archive's
    checksum once complete; an archive whose stamp matches is skipped. Returns
    ``{archive: extracted_now}``.
    """
    sums = read_checksums(archive_dir)
    stamps = raw_dir / STAMP_DIR
    stamps.mkdir(parents=True, exist_ok=True)
    for stale in sorted(raw_dir.glob(".extract-*")):  # left by a killed extraction
        log(f"removing {stale}, left by an interrupted extraction")
        shutil.rmtree(stale, ignore_errors=True)
    done = {}
    for name, s in sorted(sums.items()):
        if not name.endswith((".tar.gz", ".tgz", ".tar")):
            continue
        key = json.dumps(s, sort_keys=True)
        stamp = stamps / name
        if stamp.exists() and stamp.read_text() == key:
            done[name] = False
            continue
        stamp.unlink(missing_ok=True)
        log(f"extracting {name} into {raw_dir}")
        safe_extract(archive_dir / name, raw_dir)
        stamp.write_text(key)
        done[name] = True
    return done

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
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

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


def _fetch(url: str, part: Path, timeout: float, desc: str) -> tuple[int, bool]:
    """Append ``url``'s bytes to ``part``, resuming with an HTTP Range request if it exists.

    Returns ``(bytes added, whether the server declared the body's length)``. Whatever the
    network does raises :class:`DownloadError` (the caller adds the file and URL): no
    connection, an HTTP error status, a reset or a timeout before or during the body, a
    chunked body cut mid-way (``http.client.IncompleteRead``, which is no ``OSError``),
    fewer bytes than declared. The bytes that did arrive stay in ``part`` for the next
    attempt to resume after. A body without a declared length that the server cut cannot
    be told from a whole one here: the caller's checksum is the judge, and ``declared``
    tells it to resume before calling a mismatch corruption. A 416 answer to the Range
    request means the server has nothing past what we hold: 0 bytes added, the transfer was
    complete. An ``OSError`` escaping from here is local (writing ``part``), not the network's.
    """
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing past what we hold: the transfer was complete; verify it
            return 0, True
        raise DownloadError(f"HTTP {e.code} {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:  # refused, unreachable, reset or timed out before the body
        raise DownloadError(f"{type(e).__name__}: {e}") from e
    with resp:
        if have and resp.status != 206:  # server ignored Range: start over
            have = 0
        length = resp.headers.get("Content-Length", "")
        total = int(length) + have if length.isdigit() else None
        added = 0
        with open(part, "ab" if have else "wb") as f, _bar(total, have, desc) as bar:
            while True:
                try:
                    block = resp.read(CHUNK)
                except http.client.IncompleteRead as e:  # chunked body cut: keep what arrived, resume after it
                    f.write(e.partial)
                    raise DownloadError(f"transfer cut after {have + added + len(e.partial)} bytes ({e!r})") from e
                except (OSError, http.client.HTTPException) as e:  # a reset or a timeout mid-body
                    raise DownloadError(f"transfer cut after {have + added} bytes ({type(e).__name__}: {e})") from e
                if not block:
                    break
                f.write(block)
                added += len(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"transfer ended at {part.stat().st_size} of {total} bytes")
    return added, total is not None


def fetch_verified(name: str, urls: Iterable[str], store: Path, sums: dict[str, str],
                   timeout: float = 60.0, retries: int = 3) -> Path:
    """``store/name``, fetched from the first URL that works and checked against ``sums``.

    Bytes go to ``name.part`` (kept and resumed with HTTP Range across attempts, mirrors
    and runs); only a verified file is renamed to ``name``. A file already there and
    verified is not fetched again. Every way a transfer fails or ends early (no connection,
    a reset, a timeout, fewer bytes than declared, a chunked body cut mid-way) is retried,
    resuming, up to ``retries`` attempts per URL. A body with no declared length that does
    not match is taken as possibly cut and resumed first; only when the server has nothing
    more (416, or 0 bytes added) or the length was declared is a mismatch corruption: the
    file moves to ``name.bad`` and :class:`DownloadError` names the file, the URL and both
    sums. Failing on every URL raises :class:`DownloadError` naming the file and each
    attempt's URL and error; failing to write ``name.part`` stops at once (no retry helps).
    """
    store.mkdir(parents=True, exist_ok=True)
    final = store / name
    if verified(final, sums):
        return final
    part = final.with_name(name + ".part")
    errors = []
    for url in urls:
        for attempt in range(1, retries + 1):
            try:
                added, declared = _fetch(url, part, timeout, name)
            except DownloadError as e:
                errors.append(f"{url} (attempt {attempt}/{retries}): {e}")
                continue
            except OSError as e:
                raise DownloadError(f"{name}: cannot write {part} while fetching {url}: {e}") from e
            got = hash_file(part, sums, desc=name)
            bad = [a for a in sums if got[a] != sums[a]]
            if not bad:
                os.replace(part, final)
                _write_stamp(final, got)
                return final
            a = bad[0]
            if declared or not added:
                dest = final.with_name(name + ".bad")
                os.replace(part, dest)
                raise DownloadError(f"{name}: checksum mismatch from {url}: expected {a} {sums[a]}, got {got[a]}; "
                                    f"the file was moved aside to {dest} and not extracted")
            # no declared length: a cut looks like a whole body; resume from here before calling it corrupt
            errors.append(f"{url} (attempt {attempt}/{retries}): {part.stat().st_size} bytes sent without a declared "
                          f"length do not match the {a} sum: taken as cut short, not as corrupt")
    kept = f"; the {part.stat().st_size} bytes received are kept in {part} for the next run to resume" \
        if part.exists() else ""
    raise DownloadError(f"{name}: every mirror failed ({retries} attempts each){kept}:\n  " + "\n  ".join(errors))


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

ROOT = "LibriSpeech"
MAX_EXTRACTED_KEY = "download.max_extracted_gb"
# What reading or extracting a damaged archive raises: tarfile's own errors, gzip's
# BadGzipFile (an OSError) and EOFError for a stream cut short, zlib.error for corrupt
# deflate data, and OSError from the file system (a name too long, no space left).
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _archive_subset(archive: Path) -> str:
    """The subset an archive carries, from its name: ``dev-clean.tar.gz`` -> ``dev-clean``."""
    name = archive.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _name_max(path: Path) -> int:
    """The longest file name (bytes) the file system holding ``path`` (or its nearest existing
    parent) allows; 255 where it cannot be asked."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return os.pathconf(path, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _check_member(member: tarfile.TarInfo, archive: Path, subset: str, name_max: int,
                  layout: "Layout | None" = None) -> None:
    """Refuse ``member`` unless it is a plain file or directory inside ``LibriSpeech/<subset>/``
    (or a file directly in ``LibriSpeech/``: SPEAKERS.TXT and the like, which every subset's
    archive carries) with names the file system can hold.

    Why refuse rather than skip or merge: the checksum vouches for this archive as the source
    of *its* subset, and the manifest stage trusts ``LibriSpeech/<subset>/`` to be what that
    subset's verified archive held. A member in another subset's folder would replace (the
    subset is moved into place whole) or, if merged, mix into a subset already extracted from
    its own archive; never clobbering instead would make the result depend on which archive
    was extracted first, and would still let an archive plant a subset not extracted yet.
    Anything outside ``LibriSpeech/`` (e.g. ``.extracted/<archive>``, the stamps saying what
    was extracted) is refused for the same reason.
    """
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        raise DownloadError(f"{archive}: refusing absolute path member {name!r}")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise DownloadError(f"{archive}: refusing member with '..' {name!r}")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive}: refusing link or special member {name!r}")
    too_long = [p for p in parts if len(p.encode("utf-8", "surrogateescape")) > name_max]
    if too_long:
        raise DownloadError(f"{archive}: refusing member {name[:120]!r}... with a name of "
                            f"{len(too_long[0].encode('utf-8', 'surrogateescape'))} bytes, over the file system's "
                            f"limit of {name_max}")
    if layout is not None:
        if not layout.allows(parts, member.isdir(), subset):
            raise DownloadError(f"{archive}: refusing member {name!r}: this archive may only write "
                                f"{layout.describe(subset)}; nothing was extracted")
        return
    if len(parts) == 1:
        inside = parts == (ROOT,) and member.isdir()
    else:
        inside = parts[0] == ROOT and (parts[1] == subset or len(parts) == 2 and member.isfile())
    if not inside:
        raise DownloadError(f"{archive}: refusing member {name!r}: this archive may only write {ROOT}/{subset}/ "
                            f"(and files directly in {ROOT}/), never another subset's folder or anything "
                            "outside it; nothing was extracted")


@dataclass(frozen=True)
class Layout:
    """Where an archive of another corpus may write (LibriSpeech's rule is the default): the
    names allowed at each folder level from the top, ``()`` for any one name (the same for
    every member at the top level) and ``"{stem}"`` for the archive's own name (AISHELL-1's
    ``S0002.tar.gz`` writes ``{train,dev,test}/S0002/``). Files lie below the last level."""

    levels: tuple[tuple[str, ...], ...]

    def _names(self, i: int, stem: str) -> tuple[str, ...]:
        return tuple(stem if n == "{stem}" else n for n in self.levels[i])

    def allows(self, parts: tuple[str, ...], is_dir: bool, stem: str) -> bool:
        fits = all(not self.levels[i] or parts[i] in self._names(i, stem)
                   for i in range(min(len(parts), len(self.levels))))
        return fits and (len(parts) > len(self.levels) or is_dir)

    def describe(self, stem: str) -> str:
        return "/".join("<one folder>" if not names else names[0] if len(names) == 1 else "{" + ",".join(names) + "}"
                        for names in (self._names(i, stem) for i in range(len(self.levels)))) + "/"


def _check_size(members: list[tarfile.TarInfo], archive: Path, max_gb: float) -> None:
    """Refuse an archive whose members' sizes (from the tar headers, before anything is
    written) add up to more than ``max_gb``: a gzip of zeros inflates a thousandfold, so
    the archive's own size says nothing about the disk its extraction takes."""
    files = [m for m in members if m.isfile()]
    total = sum(m.size for m in files)
    if total > max_gb * 1e9:
        big = max(files, key=lambda m: m.size)
        raise DownloadError(f"{archive}: its members would extract to {total} bytes ({total / 1e9:.2f} GB; largest: "
                            f"{big.name!r}, {big.size} bytes), over the limit of {max_gb:g} GB set by "
                            f"'{MAX_EXTRACTED_KEY}' in params.yaml; nothing was extracted (raise the limit if the "
                            "archive is genuine)")


class _StrictTarInfo(tarfile.TarInfo):
    """A member header that does not parse is an error wherever it is. tarfile alone takes an
    unreadable header past the first (a bad checksum, a header cut short) for the end of the
    archive, so a corrupt archive would extract short without a word."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        try:
            return super().frombuf(buf, encoding, errors)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as e:
            raise tarfile.SubsequentHeaderError(f"corrupt member header: {e}") from e


def _check_end(tar: tarfile.TarFile) -> None:
    """Read on from the end-of-archive block to the end of the stream, cheaply (forward only):
    only zero padding may follow, so a member header zeroed out is caught too; and gzip checks
    its CRC and length only when read to the end, which tarfile, stopping at the
    end-of-archive block, never does."""
    at = tar.fileobj.tell()
    while block := tar.fileobj.read(CHUNK):
        if block.strip(b"\0"):
            raise tarfile.ReadError(f"data after the end-of-archive block (byte {at} of the tar stream): "
                                    "a member header zeroed out?")
        at += len(block)


def safe_extract(archive: Path, dest: Path, max_gb: float, depth: int = 2, layout: Layout | None = None) -> None:
    """Extract a .tar.gz into ``dest`` after checking every member.

    Absolute paths, ``..``, links and devices, names too long for the file system, members
    outside ``LibriSpeech/<subset>/`` (the subset the archive's name says) and a total size
    over ``max_gb`` are refused before anything is written. An archive that cannot be read
    (not gzip, truncated, corrupt) or a member that cannot be written raises
    :class:`DownloadError` naming the archive and, where known, the member.
    Extraction goes to a temporary directory inside ``dest``; then each entry ``depth``
    levels down (``LibriSpeech/<subset>``) is renamed into place, replacing an older copy
    whole, while shared parents (``LibriSpeech/``) are merged. A killed extraction leaves
    only the hidden temporary directory, never a half subset at its final place.
    """
    try:
        tar = tarfile.open(archive, "r:*", tarinfo=_StrictTarInfo)
    except _ARCHIVE_ERRORS as e:
        raise DownloadError(f"{archive}: not a readable tar or tar.gz archive "
                            f"({type(e).__name__}: {_one_line(e)})") from e
    with tar:
        try:
            members = tar.getmembers()
            _check_end(tar)
        except _ARCHIVE_ERRORS as e:
            where = f" at or after member {tar.members[-1].name!r}" if tar.members else ""
            raise DownloadError(f"{archive}: unreadable{where}, truncated or corrupt "
                                f"({type(e).__name__}: {_one_line(e)}); nothing was extracted") from e
        subset, name_max = _archive_subset(archive), _name_max(dest)
        if layout is not None and not layout.levels[0]:  # one folder, the same for every member
            tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
            if len(tops) > 1:
                raise DownloadError(f"{archive}: members in {len(tops)} top-level folders ({', '.join(sorted(tops)[:3])}"
                                    "...): this archive may only write one folder; nothing was extracted")
        for m in members:
            _check_member(m, archive, subset, name_max, layout)
        _check_size(members, archive, max_gb)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
        current: list[str] = []

        def track(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
            current[:] = [member.name]  # the member being extracted, for the error message
            return tarfile.data_filter(member, path)
        try:
            try:
                tar.extractall(tmp, members=members, filter=track)
            except _ARCHIVE_ERRORS as e:
                where = f" at member {current[0]!r}" if current else ""
                raise DownloadError(f"{archive}: extraction failed{where} ({type(e).__name__}: {_one_line(e)}); "
                                    f"nothing was moved into {dest}") from e
            _move_into(tmp, dest, depth)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


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


def extract_archives(archive_dir: Path, raw_dir: Path, log=print, *, max_gb: float, depth: int = 2,
                     layout: Layout | None = None) -> dict[str, bool]:
    """Extract every ``.tar.gz`` listed in ``archive_dir/checksums.json`` into ``raw_dir``.

    Each extraction is stamped (``raw_dir/.extracted/<archive>``) with the archive's
    checksum once complete; an archive whose stamp matches is skipped. ``max_gb``
    (``download.max_extracted_gb``) bounds what one archive may extract to. Returns
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
        safe_extract(archive_dir / name, raw_dir, max_gb, depth, layout)
        stamp.write_text(key)
        done[name] = True
    return done

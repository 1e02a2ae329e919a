"""LibriSpeech download: mirrors in order, resumable transfers, checksums, safe extraction."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

# SHA-256 of OpenSLR resource 12's archives (the values torchaudio pins for the same files).
CHECKSUMS: dict[str, str] = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download or verification failure; the message names the file and mirror."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append ``url``'s bytes to ``part``, resuming with an HTTP Range request if it exists."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if have and resp.status != 206:  # server ignored Range: start over
            have = 0
        total = resp.headers.get("Content-Length")
        total = int(total) + have if total else None
        with open(part, "ab" if have else "wb") as f:
            done = have
            for block in iter(lambda: resp.read(CHUNK), b""):
                f.write(block)
                done += len(block)
                if sys.stderr.isatty() and total:
                    print(f"\r{part.name}: {done / 1e6:.1f}/{total / 1e6:.1f} MB", end="", file=sys.stderr)
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"{url}: transfer ended at {part.stat().st_size} of {total} bytes")


def download_archive(name: str, mirrors: Iterable[str], dest_dir: Path, sha256: str,
                     timeout: float = 60.0, retries: int = 3) -> Path:
    """Fetch ``<mirror>/<name>.tar.gz`` into ``dest_dir`` and verify it.

    Writes to ``<name>.tar.gz.part`` (resumed across attempts and runs), verifies the
    SHA-256, then renames atomically. An archive already present and verified is not
    fetched again. A checksum mismatch moves the file to ``*.bad`` and raises
    :class:`DownloadError` naming both sums; so does failing on every mirror.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / f"{name}.tar.gz"
    if final.exists() and sha256_of(final) == sha256:
        return final
    part = final.with_name(final.name + ".part")
    errors = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{name}.tar.gz"
        for _ in range(retries):
            try:
                _fetch(url, part, timeout)
                break
            except (OSError, urllib.error.URLError, DownloadError) as e:
                errors.append(f"{url}: {e}")
        else:
            continue
        got = sha256_of(part)
        if got != sha256:
            bad = final.with_name(final.name + ".bad")
            os.replace(part, bad)
            raise DownloadError(f"{final.name}: checksum mismatch from {url}: expected sha256 {sha256}, "
                                f"got {got}; moved aside to {bad}")
        os.replace(part, final)
        return final
    raise DownloadError(f"{final.name}: every mirror failed:\n  " + "\n  ".join(errors))


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        raise DownloadError(f"{archive}: refusing absolute path member {name!r}")
    if ".." in Path(name).parts:
        raise DownloadError(f"{archive}: refusing member with '..' {name!r}")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive}: refusing link or special member {name!r}")


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a .tar.gz into ``dest`` after checking every member.

    Absolute paths, ``..``, links and devices are refused before anything is written.
    Extraction goes to a temporary sibling directory whose contents are then moved in,
    so a killed extraction never leaves a half tree at its final place.
    """
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            _check_member(m, archive)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
        try:
            tar.extractall(tmp, members=members, filter="data")
            for top in sorted(tmp.iterdir()):
                target = dest / top.name
                if target.exists() and top.is_dir():
                    _merge_tree(top, target)
                else:
                    os.replace(top, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _merge_tree(src: Path, dst: Path) -> None:
    """Move ``src``'s entries into existing ``dst`` (LibriSpeech/ holds several subsets)."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if target.exists() and entry.is_dir():
            _merge_tree(entry, target)
        else:
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(entry, target)


def download_librispeech(subsets: Iterable[str], mirrors: list[str], out_dir: str | Path,
                         archive_dir: str | Path, checksums: dict[str, str] | None = None,
                         timeout: float = 60.0) -> dict[str, int]:
    """Download, verify and extract ``subsets`` into ``out_dir/LibriSpeech/<subset>``.

    ``archive_dir`` keeps verified archives (and partial ``.part`` files) across runs.
    ``checksums`` overrides the pinned SHA-256 per subset (tests serve their own archives).
    Returns the number of FLAC files per subset.
    """
    sums = {**CHECKSUMS, **(checksums or {})}
    out_dir, archive_dir = Path(out_dir), Path(archive_dir)
    counts = {}
    for name in subsets:
        if name not in sums:
            raise DownloadError(f"no pinned checksum for subset '{name}'; known: {', '.join(sorted(sums))}")
        archive = download_archive(name, mirrors, archive_dir, sums[name], timeout)
        safe_extract(archive, out_dir)
        counts[name] = sum(1 for _ in (out_dir / "LibriSpeech" / name).rglob("*.flac"))
    return counts

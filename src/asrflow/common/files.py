"""Writing files so that a reader sees the previous version or the new one, never part of one,
and file digests.

Every product, metrics file, checkpoint and cache entry of the pipeline is written through
:func:`atomic_open`: the data go to a hidden temporary sibling (``.<name>.<pid>.<random>.tmp``),
are flushed to disk, and the sibling is renamed onto the target. A failure (an exception, a
full disk) removes the sibling and leaves the target as it was; a process killed outright
leaves only the sibling, which ``*.tmp`` globs can clean up.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def out_of_space(e: BaseException | None) -> bool:
    """Whether ``e`` (or an exception it was raised from) is a full disk or an exceeded quota."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_full_error(path: Path, hint: str = "") -> OSError:
    """The error to raise when writing ``path`` ran out of space: where, how much is free,
    that the previous file is intact, and what to do (``hint`` adds a stage-specific option).
    Libraries' own errors for it are often unreadable (torch: 'unexpected pos')."""
    free = shutil.disk_usage(path.parent).free
    kept = f"the previous {path} is unchanged" if path.exists() else "nothing was written"
    return OSError(errno.ENOSPC, f"no space left on the device holding {path.parent} while writing {path.name} "
                                 f"({free / 1e6:.1f} MB free); {kept}: free space there{' ' + hint if hint else ''}")


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", hint: str = "", **kw: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing (``mode`` "w" or "wb"; ``kw`` go to
    :func:`open`); when the block ends without error it is flushed, fsynced and renamed onto
    ``path``. On any error it is removed and ``path`` keeps its previous content; a full disk
    raises :func:`disk_full_error` (with ``hint``). Parent directories are created."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **kw) as f:  # x: a new file, the usual permissions
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if out_of_space(e):
            raise disk_full_error(path, hint) from e
        raise


def write_text(path: str | Path, text: str) -> None:
    """``text`` as UTF-8 with ``\\n`` line ends, atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON with sorted keys and a final newline, atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rows (same keys, in order) as CSV with a header (e.g. for DVC plots), atomically."""
    with atomic_open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy ``src``'s bytes to ``dst``, atomically."""
    with open(src, "rb") as s, atomic_open(dst, "wb") as d:
        shutil.copyfileobj(s, d, 1 << 22)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def replaced_dir(out_dir: str | Path) -> Iterator[Path]:
    """A path beside ``out_dir`` (not created) to build the new directory at; when the block
    ends without an exception, the new directory replaces ``out_dir`` by renames, so
    ``out_dir`` never holds a half-written tree; either way nothing else is left behind."""
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        yield work / "new"
        if out_dir.exists() or out_dir.is_symlink():
            os.replace(out_dir, work / "previous")
        os.replace(work / "new", out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)

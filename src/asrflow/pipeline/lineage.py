"""Where a result came from: git commit (and whether the tree was dirty), the DVC hashes of
the products it was computed from, and the MLflow runs that recorded it.

:func:`dvc_hash` computes the hash DVC 3 records in ``dvc.lock`` for an output — the MD5
of a file's bytes; for a directory, the MD5 of DVC's JSON listing of its files' hashes,
suffixed ``.dir`` — so a stage can state its inputs' hashes while the pipeline runs
(Snakemake records them in dvc.lock only after the whole run; tests check the two agree).
File hashes are remembered by (path, size, mtime, inode), as DVC's own state database does,
so a 60 GB manifest directory is read once, not on every report.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from asrflow.common.files import write_text

# Paths the pipeline itself writes that users commit (dvc.lock; DVC metrics and plots data, kept
# in git so `dvc metrics diff` / `dvc plots diff` / `dvc exp show` can compare revisions; each
# stage's lineage record: its MLflow run, commit, timings, names and paths).
RUN_WRITTEN = ("dvc.lock", "metrics/", "plots/", "lineage/")


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class HashCache:
    """File MD5s keyed by (path, size, mtime_ns, inode), persisted as JSON (optional)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.entries: dict[str, str] = {}
        if self.path and self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text())
            except ValueError:  # a damaged cache is only a cache: start again
                self.entries = {}

    def md5(self, path: Path) -> str:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
        if key not in self.entries:
            self.entries[key] = _md5_file(path)
        return self.entries[key]

    def save(self) -> None:
        if self.path:
            write_text(self.path, json.dumps(self.entries, sort_keys=True))


# File names .dvcignore makes DVC leave out of directory outputs (Snakemake's marker file)
DVC_IGNORED = frozenset({".snakemake_timestamp"})


def dvc_hash(path: str | Path, cache: HashCache | None = None, ignore: frozenset[str] = DVC_IGNORED) -> str:
    """The ``md5`` DVC 3 records for ``path`` (a file, or a directory as ``<md5>.dir``);
    files named in ``ignore`` (what .dvcignore names) are left out of a directory's listing."""
    path = Path(path)
    cache = cache or HashCache()
    if not path.is_dir():
        return cache.md5(path)
    listing = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in files:
            if name in ignore:
                continue
            f = Path(root) / name
            listing.append({"md5": cache.md5(f), "relpath": f.relative_to(path).as_posix()})
    listing.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"


def lock_hashes(lock_path: str | Path) -> dict[str, str]:
    """``{path: md5}`` of every stage output recorded in a dvc.lock ({} if there is none)."""
    lock_path = Path(lock_path)
    if not lock_path.exists():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    out = {}
    for stage in (lock.get("stages") or {}).values():
        for entry in stage.get("outs", []):
            out[entry["path"]] = entry["md5"]
    return out


@dataclass(frozen=True)
class GitState:
    commit: str | None       # None outside a git repository
    dirty: bool
    changed: tuple[str, ...]  # what makes it dirty (first few paths)

    @property
    def label(self) -> str:
        return commit_label(self.commit, self.dirty)


def commit_label(commit: str | None, dirty: bool) -> str:
    """A short commit id, marked ``-dirty`` when the tree had uncommitted changes."""
    return commit[:10] + ("-dirty" if dirty else "") if commit else "no git"


def git_state(root: str | Path = ".") -> GitState:
    """HEAD's commit and whether tracked or untracked (not ignored) files differ from it.

    What the pipeline itself writes and users commit after a run (``dvc.lock``, the DVC
    metrics and plots data, the stages' lineage records) is left out: a run never makes its own tree dirty.
    """
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    try:
        head = git("rev-parse", "HEAD")
    except OSError:  # no git installed
        return GitState(None, False, ())
    if head.returncode != 0:
        return GitState(None, False, ())
    status = git("status", "--porcelain=v1", "--untracked-files=normal")
    changed = [line[3:] for line in status.stdout.splitlines() if not line[3:].strip('"').startswith(RUN_WRITTEN)]
    return GitState(head.stdout.strip(), bool(changed), tuple(changed[:10]))


def lineage(products: dict[str, str | Path], root: str | Path = ".", cache: HashCache | None = None) -> dict[str, Any]:
    """Git state plus the DVC hash of each named product (``{"manifest": path, ...}``)."""
    g = git_state(root)
    hashes = {name: dvc_hash(Path(root) / p, cache) for name, p in products.items()}
    return {"git_commit": g.commit, "git_dirty": g.dirty, "git_changed": list(g.changed),
            "git_label": g.label, "dvc": hashes}

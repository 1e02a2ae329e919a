"""Watching processes from the tests: a process tree, and whether a process is stopped
(frozen by the fault hook's SIGSTOP)."""

from __future__ import annotations

from pathlib import Path


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree(root: int) -> set[int]:
    """``root`` and every process descending from it."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(_stat(int(stat.parent.name))[1])
        except (OSError, IndexError, ValueError):
            continue
    pids, grew = {root}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in pids} - pids
        grew, pids = bool(more), pids | more
    return pids


def stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (state T)."""
    try:
        return _stat(pid)[0] == "T"
    except OSError:
        return False

"""Progress bars on stderr: live on a terminal, a line every 30 s when stderr is a log file."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int | None, desc: str, unit: str = "it", initial: int = 0, show: bool = True, **kw) -> tqdm:
    """A tqdm bar (count, rate, ETA); sparse and not left behind when stderr is not a TTY."""
    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, disable=not show,
                mininterval=0.5 if tty else 30, dynamic_ncols=tty, leave=tty, **kw)

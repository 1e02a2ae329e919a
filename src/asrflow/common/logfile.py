"""A stage's log: what it prints to the terminal, also written to a file a person can read.

:class:`LogTee` stands in for ``sys.stderr``: the terminal gets everything as before (live
progress bars included); the file gets complete lines, each with a timestamp, and of a
progress bar's carriage-return frames only one line every ``frame_every_s`` seconds (and its
last frame), never a screen of redraws. Text written with :meth:`LogTee.file_only` (e.g. a
traceback) goes to the file alone.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TextIO

_PIECES = re.compile(r"(\r|\n)")


class LogTee:
    """A text stream writing to ``terminal`` and, line by line with timestamps, to ``path``
    (created or truncated)."""

    def __init__(self, terminal: TextIO, path: str | Path, frame_every_s: float = 30.0):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.terminal, self.path, self.frame_every_s = terminal, Path(path), frame_every_s
        self._file = open(path, "w", encoding="utf-8")
        self._line = ""          # the current line's text since its last carriage return
        self._last_frame = float("-inf")

    def _emit(self, text: str) -> None:
        self._file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text.rstrip()}\n")

    def _to_file(self, s: str) -> None:
        if self._file.closed:  # a logger that kept this stream past close() writes to the terminal only
            return
        for piece in _PIECES.split(s):
            if piece == "\n":
                if self._line.strip():
                    self._emit(self._line)
                self._line = ""
            elif piece == "\r":  # a progress bar redraws the line: keep one frame now and then
                now = time.monotonic()
                if self._line.strip() and now - self._last_frame >= self.frame_every_s:
                    self._emit(self._line)
                    self._last_frame = now
                self._line = ""
            else:
                self._line += piece
        self._file.flush()

    def write(self, s: str) -> int:
        self.terminal.write(s)
        self._to_file(s)
        return len(s)

    def file_only(self, s: str) -> None:
        """Write ``s`` (e.g. a traceback) to the log file, not the terminal."""
        self._to_file(s if s.endswith("\n") else s + "\n")

    def flush(self) -> None:
        self.terminal.flush()
        if not self._file.closed:
            self._file.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def fileno(self) -> int:
        return self.terminal.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.terminal, "encoding", "utf-8")

    def close(self) -> None:
        """Write what is left of the current line, close the file and give stderr back (what
        is written here afterwards still reaches the terminal)."""
        if self._file.closed:
            return
        if self._line.strip():
            self._emit(self._line)
        self._line = ""
        self._file.close()
        if sys.stderr is self:
            sys.stderr = self.terminal

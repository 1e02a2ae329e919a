"""Transcript normalisation and the character vocabulary.

The vocabulary file holds one token per line; index 0 is the CTC blank ``<blank>`` and
the word separator is ``|`` (shown as a space when decoding), the convention
flashlight's decoders expect.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from asrflow.common.files import write_text

BLANK = "<blank>"
SPACE = "|"
_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case and collapse whitespace (LibriSpeech transcripts are upper case)."""
    return _WS.sub(" ", text.strip().lower())


def build_vocab(transcripts: Iterable[str], min_count: int = 1) -> tuple[list[str], dict[str, int]]:
    """Character vocabulary from normalised transcripts.

    Returns ``(tokens, dropped)``: tokens start with the blank and the word separator,
    then every character seen at least ``min_count`` times, sorted so the file is
    byte-identical for the same input. ``dropped`` maps rarer characters to their counts.
    """
    counts: Counter[str] = Counter()
    for t in transcripts:
        counts.update(ch for ch in t if ch != " ")
    kept = sorted(ch for ch, n in counts.items() if n >= min_count)
    dropped = {ch: n for ch, n in sorted(counts.items()) if n < min_count}
    if SPACE in kept:
        raise ValueError(f"transcripts contain the reserved word-separator character {SPACE!r}")
    return [BLANK, SPACE, *kept], dropped


def write_vocab(tokens: list[str], path: str | Path) -> None:
    """One token per line, atomically."""
    write_text(path, "".join(t + "\n" for t in tokens))


def read_vocab(path: str | Path) -> list[str]:
    """Tokens of a vocabulary file, blank first. Raises ValueError if it is malformed."""
    tokens = Path(path).read_text(encoding="utf-8").split("\n")[:-1]
    if len(tokens) < 3 or tokens[0] != BLANK or tokens[1] != SPACE:
        raise ValueError(f"{path}: not an asrflow vocabulary (expected '{BLANK}' then '{SPACE}' first)")
    return tokens


class Tokenizer:
    """Maps normalised text to token ids and back."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def unknown_chars(self, text: str) -> set[str]:
        return {ch for ch in text if ch != " " and ch not in self.index}

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; raises KeyError naming a character outside the vocabulary."""
        out = []
        for ch in text:
            key = SPACE if ch == " " else ch
            if key not in self.index:
                raise KeyError(f"character {ch!r} is not in the vocabulary")
            out.append(self.index[key])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(" " if self.tokens[i] == SPACE else self.tokens[i] for i in ids).strip()

    def greedy(self, best_path: Iterable[int]) -> str:
        """Collapse repeats and drop blanks of a frame-wise argmax path."""
        out, prev = [], -1
        for i in best_path:
            if i != prev and i != 0:
                out.append(i)
            prev = i
        return _WS.sub(" ", self.decode(out))

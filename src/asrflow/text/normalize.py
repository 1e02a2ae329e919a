"""Transcript normalisation by language, applied once in the manifest stage.

- ``en``: lower case, whitespace collapsed (LibriSpeech transcripts are upper case); a
  character outside ``manifest.allowed_chars`` (and the space) rejects the line.
- ``zh`` (Mandarin, character units): Unicode NFKC (full-width letters, digits and
  punctuation become their half-width forms; ideographs are unchanged), lower case, then
  every punctuation mark, symbol and space removed: the transcript is a run of characters,
  each a token, and word segmentation (AISHELL-1's spaces) is not kept. Latin letters stay,
  one token each, as do the other ``manifest.allowed_chars``; CJK Unified Ideographs (the
  basic block and Extension A) are allowed. Digits are not: a transcript with ``2008`` is
  rejected (``bad_characters``), because how it is read (二零零八 or 两千零八) cannot be
  told from the text, and guessing would teach the model a reading the audio may not have.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable

from asrflow.text.vocab import normalize

LANGUAGES = ("en", "zh")
_CJK = [chr(c) for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF)) for c in range(lo, hi + 1)]
_WS = re.compile(r"\s+")


def normalize_zh(text: str) -> str:
    """Mandarin transcript -> characters only (see the module's docstring)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in _WS.sub("", text) if unicodedata.category(ch)[0] not in "PSZ")


def text_rule(language: str, allowed_chars: str) -> tuple[Callable[[str], str], set[str]]:
    """``(normalise, allowed characters)`` for a dataset's language."""
    if language == "en":
        return normalize, set(allowed_chars) | {" "}
    if language == "zh":
        return normalize_zh, set(_CJK) | set(allowed_chars)
    raise ValueError(f"unknown language {language!r}; known: {', '.join(LANGUAGES)}")

"""Transcript normalisation and the vocabulary: characters, or SentencePiece subwords.

The vocabulary file holds one token per line; index 0 is the CTC blank ``<blank>`` and
index 1 the word separator ``|`` (shown as a space when decoding), the convention
flashlight's decoders expect. Character units (the default) are one token per character.

Subword units (``vocab.units: bpe``) are SentencePiece BPE pieces trained on the training
transcripts: a piece that starts a word begins with ``▁`` (which carries the space, so the
model never needs ``|``; it stays at index 1 as flashlight's silence token). The file lists
the pieces in SentencePiece's id order, which for BPE is its merge order, and that is all
encoding needs: :meth:`Tokenizer.spell` applies the merges in that order, giving what
SentencePiece's own encoder gives (a test checks this on real transcripts), so decoding,
serving and hotwords need neither the SentencePiece library nor its model file.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from asrflow.common.files import write_text

BLANK = "<blank>"
SPACE = "|"
WORD_START = "\u2581"  # SentencePiece's word-start mark
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


def build_bpe_vocab(transcripts: Iterable[str], size: int) -> list[str]:
    """SentencePiece BPE pieces of ``size`` (its ``vocab_size``, counting its unknown piece)
    trained on normalised transcripts: ``[<blank>, |, pieces in id order]``, without the
    unknown piece (a character outside the pieces is refused, as with characters). The
    training is single-threaded and reads every transcript in order, so the same input gives
    the same file. Raises ValueError (SentencePiece's reason) when ``size`` cannot be met,
    e.g. below the number of distinct characters."""
    import io

    import sentencepiece as spm

    texts = [t for t in transcripts if t.strip()]
    if any(SPACE in t or WORD_START in t for t in texts):
        raise ValueError(f"transcripts contain a reserved character ({SPACE!r} or {WORD_START!r})")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=size, model_type="bpe",
            character_coverage=1.0, normalization_rule_name="identity", bos_id=-1, eos_id=-1, unk_id=0,
            num_threads=1, input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)
    except RuntimeError as e:
        raise ValueError(f"SentencePiece could not train {size} pieces on {len(texts)} transcripts: {e}") from None
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return [BLANK, SPACE, *(sp.id_to_piece(i) for i in range(1, sp.get_piece_size()))]


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
    """Maps normalised text to token ids and back: characters, or subword pieces when the
    vocabulary holds SentencePiece pieces (see the module's docstring)."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        self.subword = any(t.startswith(WORD_START) for t in tokens[2:])
        self.alphabet = {ch for t in tokens[2:] for ch in t} - {WORD_START}  # the characters it can spell
        self._spelled: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    def unknown_chars(self, text: str) -> set[str]:
        return {ch for ch in text if ch != " " and ch not in self.alphabet}

    def spell(self, word: str) -> list[str]:
        """The tokens of one word: its characters, or its subword pieces (SentencePiece BPE:
        starting from ``▁`` + the characters, merge the adjacent pair whose join is the
        earliest piece, leftmost first, until none is a piece). Raises KeyError naming a
        character outside the vocabulary."""
        if word in self._spelled:
            return self._spelled[word]
        bad = self.unknown_chars(word)
        if bad:
            raise KeyError(f"character {min(bad)!r} is not in the vocabulary")
        syms = list(WORD_START + word) if self.subword else list(word)
        while self.subword and len(syms) > 1:
            ranks = [self.index.get(a + b, len(self.tokens)) for a, b in zip(syms, syms[1:])]
            best = min(range(len(ranks)), key=ranks.__getitem__)
            if ranks[best] == len(self.tokens):
                break
            syms[best:best + 2] = [syms[best] + syms[best + 1]]
        if len(self._spelled) < 100_000:
            self._spelled[word] = syms
        return syms

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; raises KeyError naming a character outside the vocabulary."""
        if self.subword:
            return [self.index[p] for w in text.split() for p in self.spell(w)]
        out = []
        for ch in text:
            key = SPACE if ch == " " else ch
            if key not in self.index:
                raise KeyError(f"character {ch!r} is not in the vocabulary")
            out.append(self.index[key])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        text = "".join(" " if self.tokens[i] == SPACE else self.tokens[i] for i in ids)
        return text.replace(WORD_START, " ").strip()

    def greedy(self, best_path: Iterable[int]) -> str:
        """Collapse repeats and drop blanks of a frame-wise argmax path."""
        out, prev = [], -1
        for i in best_path:
            if i != prev and i != 0:
                out.append(i)
            prev = i
        return _WS.sub(" ", self.decode(out))

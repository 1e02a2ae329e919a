"""Greedy and KenLM beam-search CTC decoding (flashlight).

The KenLM model and the lexicon trie are built once per process (:class:`BeamSearch`);
changing alpha/beta only builds a new lightweight decoder over them, so a grid search
never reloads the LM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flashlight.lib.text.decoder import (CriterionType, LexiconDecoder, LexiconDecoderOptions, LexiconFreeDecoder,
                                         LexiconFreeDecoderOptions, SmearingMode, Trie)
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary, create_word_dict, load_words

from asrflow.text.vocab import BLANK, SPACE, Tokenizer


@dataclass(frozen=True)
class BeamConfig:
    """The ``decode`` block of params.yaml (its comments say what each key does)."""

    beam_size: int
    beam_threshold: float
    token_beam: int
    mode: str        # lexicon: words from lexicon.txt + word LM; lexicon_free: char LM

    @classmethod
    def from_params(cls, decode: dict[str, Any]) -> "BeamConfig":
        return cls(**decode)


class DecodeSetupError(RuntimeError):
    """The LM directory lacks what the decoding mode needs."""


class BeamSearch:
    """CTC beam search with a KenLM n-gram through flashlight-text.

    ``lexicon`` mode spells only lexicon words and scores them with the word LM
    (``lm.bin``, ``lexicon.txt``); ``lexicon_free`` mode emits any character sequence,
    scored token by token with the character LM (``char.bin``). The LM (and the lexicon
    trie) are loaded once; :meth:`set_weights` only makes a new lightweight decoder.
    """

    def __init__(self, tokens: list[str], lm_dir: str | Path, cfg: BeamConfig):
        lm_dir = Path(lm_dir)
        self.cfg = cfg
        self.tokens = tokens
        self.token_dict = Dictionary(tokens)
        self.tokenizer = Tokenizer(tokens)
        self.blank = tokens.index(BLANK)
        self.sil = tokens.index(SPACE)
        self._decoder = None
        self._weights: tuple[float, float] | None = None
        if cfg.mode == "lexicon_free":
            char_lm = lm_dir / "char.bin"
            if not char_lm.exists():
                raise DecodeSetupError(f"decode.mode is lexicon_free but {char_lm} does not exist: set "
                                       "'lm.char_order' in params.yaml (e.g. 6) so the lm stage builds a character LM")
            self.lm = KenLM(str(char_lm), self.token_dict)
            return
        lexicon = load_words(str(lm_dir / "lexicon.txt"))
        lexicon.setdefault("<unk>", [])  # create_word_dict needs an unknown word
        self.word_dict = create_word_dict(lexicon)
        self.lm = KenLM(str(lm_dir / "lm.bin"), self.word_dict)
        self.unk = self.word_dict.get_index("<unk>")
        self.trie = Trie(len(tokens), self.sil)
        start = self.lm.start(False)
        for word, spellings in lexicon.items():
            widx = self.word_dict.get_index(word)
            _, score = self.lm.score(start, widx)
            for spelling in spellings:
                ids = [self.token_dict.get_index(t) for t in spelling]
                self.trie.insert(ids, widx, score)
        self.trie.smear(SmearingMode.MAX)

    def set_weights(self, alpha: float, beta: float) -> None:
        """LM weight ``alpha`` and word insertion score ``beta`` (cheap: no LM reload).

        In lexicon-free mode ``beta`` is the score for emitting the word separator.
        """
        if self._weights == (alpha, beta):
            return
        token_beam = self.cfg.token_beam or len(self.tokens)
        if self.cfg.mode == "lexicon_free":
            opts = LexiconFreeDecoderOptions(
                beam_size=self.cfg.beam_size, beam_size_token=token_beam, beam_threshold=self.cfg.beam_threshold,
                lm_weight=alpha, sil_score=beta, log_add=False, criterion_type=CriterionType.CTC)
            self._decoder = LexiconFreeDecoder(opts, self.lm, self.sil, self.blank, [])
        else:
            opts = LexiconDecoderOptions(
                beam_size=self.cfg.beam_size, beam_size_token=token_beam,
                beam_threshold=self.cfg.beam_threshold, lm_weight=alpha, word_score=beta,
                unk_score=-math.inf, sil_score=0.0, log_add=False, criterion_type=CriterionType.CTC)
            self._decoder = LexiconDecoder(opts, self.trie, self.lm, self.sil, self.blank, self.unk, [], False)
        self._weights = (alpha, beta)

    def decode(self, logprobs: np.ndarray) -> str:
        """Best transcript for one utterance's (frames, vocab) float32 log-probs."""
        best = self._best(logprobs)
        if best is None:
            return ""
        if self.cfg.mode == "lexicon_free":  # a frame-level token path; -1 pads its ends
            return self.tokenizer.greedy(t for t in best.tokens if t >= 0)
        return " ".join(self.word_dict.get_entry(w) for w in best.words if w >= 0)

    def decode_aligned(self, logprobs: np.ndarray) -> tuple[str, list[AlignedWord]]:
        """:meth:`decode`'s transcript and its words, each with the first and last output frame
        of its characters on the best hypothesis' CTC path and a confidence: the mean
        posterior probability of the path's tokens over those frames (0..1)."""
        best = self._best(logprobs)
        if best is None:
            return "", []
        path = list(best.tokens)[1:-1] if len(best.tokens) == logprobs.shape[0] + 2 else list(best.tokens)
        spans: list[list[int]] = []  # [first frame, last frame] per word on the path
        chars: list[str] = []
        prev, open_word = self.blank, False
        for t, tok in enumerate(path[: logprobs.shape[0]]):
            if tok == self.sil or tok < 0:
                open_word = False
            elif tok != self.blank:
                if not open_word:
                    spans.append([t, t])
                    chars.append("")
                    open_word = True
                spans[-1][1] = t
                if tok != prev:
                    chars[-1] += self.tokens[tok]
            prev = tok
        words = " ".join(chars).split() if self.cfg.mode == "lexicon_free" else \
            [self.word_dict.get_entry(w) for w in best.words if w >= 0]
        text = " ".join(words)
        if len(words) != len(spans):  # a path that does not spell the words (not seen): no timing
            return text, [AlignedWord(w, -1, -1, float("nan")) for w in words]
        out = []
        for w, (a, b) in zip(words, spans):
            frames = range(a, b + 1)
            conf = float(np.mean([np.exp(logprobs[t, path[t]]) for t in frames]))
            out.append(AlignedWord(w, a, b, conf))
        return text, out

    def _best(self, logprobs: np.ndarray):
        if self._decoder is None:
            raise RuntimeError("call set_weights(alpha, beta) before decode()")
        em = np.ascontiguousarray(logprobs, dtype=np.float32)
        results = self._decoder.decode(em.ctypes.data, em.shape[0], em.shape[1])
        return results[0] if results else None


@dataclass(frozen=True)
class AlignedWord:
    """A decoded word: its first and last output frame (-1 when unknown) and confidence."""

    word: str
    first_frame: int
    last_frame: int
    confidence: float


def greedy_decode(logprobs: np.ndarray, tokenizer: Tokenizer) -> str:
    return tokenizer.greedy(logprobs.argmax(-1).tolist())

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

from flashlight.lib.text.decoder import (LM, CriterionType, LexiconDecoder, LexiconDecoderOptions, LexiconFreeDecoder,
                                         LexiconFreeDecoderOptions, LMState, SmearingMode, Trie)
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
            if self.tokenizer.subword:
                raise DecodeSetupError("decode.mode is lexicon_free, which spells characters, but the model's units "
                                       "are subword pieces (vocab.units: bpe): use decode.mode: lexicon")
            char_lm = lm_dir / "char.bin"
            if not char_lm.exists():
                raise DecodeSetupError(f"decode.mode is lexicon_free but {char_lm} does not exist: set "
                                       "'lm.char_order' in params.yaml (e.g. 6) so the lm stage builds a character LM")
            self.lm = KenLM(str(char_lm), self.token_dict)
            self.trie = None  # spelling is free
            return
        lexicon = load_words(str(lm_dir / "lexicon.txt"))
        lexicon.setdefault("<unk>", [])  # create_word_dict needs an unknown word
        self.word_dict = create_word_dict(lexicon)
        self.lm = KenLM(str(lm_dir / "lm.bin"), self.word_dict)
        self.unk = self.word_dict.get_index("<unk>")
        self.lexicon = {self.word_dict.get_index(w): spellings for w, spellings in lexicon.items()}
        self.trie = self._trie(self.lexicon, {})
        self._hot: dict[tuple[tuple[str, ...], float], tuple[Any, ...]] = {}  # a few recent hotword decoders

    def _trie(self, spellings: dict[int, list[list[str]]], bonus: dict[int, float]) -> Trie:
        """The lexicon trie over ``spellings`` (word index -> its spellings), each word's unigram
        LM score (plus its ``bonus``) as the score smeared along its path."""
        trie = Trie(len(self.tokens), self.sil)
        start = self.lm.start(False)
        n_base = self.word_dict.index_size()
        for widx, words in spellings.items():
            _, score = self.lm.score(start, widx if widx < n_base else self.unk)
            for spelling in words:
                trie.insert([self.token_dict.get_index(t) for t in spelling], widx, score + bonus.get(widx, 0.0))
        trie.smear(SmearingMode.MAX)
        return trie

    def set_weights(self, alpha: float, beta: float) -> None:
        """LM weight ``alpha`` and word insertion score ``beta`` (cheap: no LM reload).

        In lexicon-free mode ``beta`` is the score for emitting the word separator.
        """
        if self._weights == (alpha, beta):
            return
        self._weights = (alpha, beta)
        self._decoder = self._make_decoder(self.trie, self.lm)

    def _make_decoder(self, trie: Trie | None, lm: Any) -> Any:
        """A decoder at the current weights over ``trie`` (lexicon mode; None lexicon-free) and ``lm``."""
        alpha, beta = self._weights
        token_beam = self.cfg.token_beam or len(self.tokens)
        if self.cfg.mode == "lexicon_free":
            opts = LexiconFreeDecoderOptions(
                beam_size=self.cfg.beam_size, beam_size_token=token_beam, beam_threshold=self.cfg.beam_threshold,
                lm_weight=alpha, sil_score=beta, log_add=False, criterion_type=CriterionType.CTC)
            return LexiconFreeDecoder(opts, lm, self.sil, self.blank, [])
        opts = LexiconDecoderOptions(
            beam_size=self.cfg.beam_size, beam_size_token=token_beam,
            beam_threshold=self.cfg.beam_threshold, lm_weight=alpha, word_score=beta,
            unk_score=-math.inf, sil_score=0.0, log_add=False, criterion_type=CriterionType.CTC)
        return LexiconDecoder(opts, trie, lm, self.sil, self.blank, self.unk, [], False)

    def stream_decoder(self, hotwords: list[str] | None = None, boost: float = 10.0) -> "StreamDecoder":
        """A decoder of its own for one stream: log-probs fed as they come, the best
        hypothesis so far at any point, and at the end what :meth:`decode_aligned` gives for
        all of them (the search is frame-synchronous: feeding in pieces changes nothing)."""
        if self._decoder is None:
            raise RuntimeError("call set_weights(alpha, beta) before decoding")
        if hotwords:  # the trie is shared; the LM wrapper keeps per-decode states, so one of its own
            _, names, shared, trie = self._hot_entry(hotwords, boost)
            lm = _BoostedLM(self.lm, self.unk, shared.n_base, shared.bonus)
            decoder = StreamDecoder(self, self._make_decoder(trie, lm), names)
            decoder.keep = lm
            return decoder
        return StreamDecoder(self, self._make_decoder(self.trie, self.lm), None)

    def decode(self, logprobs: np.ndarray) -> str:
        """Best transcript for one utterance's (frames, vocab) float32 log-probs."""
        return self.text(self._best(logprobs), None)

    def text(self, best: Any, names: list[str] | None) -> str:
        """The transcript of a decoder's result (``names``: a hotword decoder's word list)."""
        if best is None:
            return ""
        if self.cfg.mode == "lexicon_free":  # a frame-level token path; -1 pads its ends
            return self.tokenizer.greedy(t for t in best.tokens if t >= 0)
        return " ".join(self._word(w, names) for w in best.words if w >= 0)

    def _word(self, index: int, names: list[str] | None) -> str:
        return names[index] if names else self.word_dict.get_entry(index)

    def hotword_decoder(self, hotwords: list[str], boost: float) -> tuple[Any, list[str]]:
        """A lexicon decoder (at the current weights) that adds ``boost`` to the LM log-score
        (before alpha scales it) of each word of ``hotwords`` (words, or phrases whose words
        are boosted each), spelling any that the lexicon lacks in the model's tokens (the LM
        scores those as its unknown word); and the word list its word indices name. The last
        few are kept. Raises ValueError for a word with a character outside the tokens, or in
        lexicon-free mode."""
        return self._hot_entry(hotwords, boost)[:2]

    def _hot_entry(self, hotwords: list[str], boost: float) -> tuple[Any, list[str], "_BoostedLM", Trie]:
        if self.cfg.mode == "lexicon_free":
            raise ValueError("hotwords need lexicon decoding (decode.mode: lexicon)")
        wanted = tuple(sorted({w for phrase in hotwords for w in phrase.lower().split()}))
        key = (wanted, float(boost), self._weights)
        if key in self._hot:
            return self._hot[key]
        for w in wanted:
            bad = sorted(self.tokenizer.unknown_chars(w))
            if bad:
                raise ValueError(f"hotword {w!r} has characters the model cannot spell: {''.join(bad)}")
        words = [self.word_dict.get_entry(i) for i in range(self.word_dict.index_size())]
        index = {w: i for i, w in enumerate(words)}
        spellings = dict(self.lexicon)
        for w in wanted:
            if w not in index:
                index[w] = len(words)
                words.append(w)
                spellings[index[w]] = [self.tokenizer.spell(w)]
        bonus = {index[w]: float(boost) for w in wanted}
        lm = _BoostedLM(self.lm, self.unk, self.word_dict.index_size(), bonus)
        trie = self._trie(spellings, bonus)
        decoder = self._make_decoder(trie, lm)
        if len(self._hot) >= 8:
            self._hot.pop(next(iter(self._hot)))
        self._hot[key] = (decoder, words, lm, trie)  # the LM and trie live as long as the decoder
        return self._hot[key]

    def decode_aligned(self, logprobs: np.ndarray, hotwords: list[str] | None = None,
                       boost: float = 10.0) -> tuple[str, list[AlignedWord]]:
        """:meth:`decode`'s transcript and its words, each with the first and last output frame
        of its characters on the best hypothesis' CTC path and a confidence: the mean
        posterior probability of the path's tokens over those frames (0..1). With
        ``hotwords``, decoded by :meth:`hotword_decoder`."""
        decoder, names = self.hotword_decoder(hotwords, boost) if hotwords else (None, None)
        return self.aligned(self._best(logprobs, decoder), logprobs, names)

    def aligned(self, best: Any, logprobs: np.ndarray, names: list[str] | None) -> tuple[str, list[AlignedWord]]:
        """The transcript and aligned words of a decoder's ``best`` result over ``logprobs``
        (``names``: the word list of a hotword decoder)."""
        if best is None:
            return "", []
        n = logprobs.shape[0]
        pad = 1 if len(best.tokens) == n + 2 else 0  # the search pads its paths with a frame each side
        path = list(best.tokens)[pad:pad + n]
        spans: list[list[int]] = []  # [first frame, last frame] of each word's letters on the path
        if self.cfg.mode == "lexicon_free":  # words are what lies between separators
            words, chars, prev, open_word = [], [], self.blank, False
            for t, tok in enumerate(path):
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
            words = " ".join(chars).split()
        else:  # the search marks the frame each word ends on; its letters are the frames before
            ends = list(best.words)[pad:pad + n]
            words, first, last = [], None, None
            for t, (tok, w) in enumerate(zip(path, ends)):
                if tok not in (self.blank, self.sil) and tok >= 0:
                    first = t if first is None else first
                    last = t
                if w >= 0:
                    words.append(self._word(w, names))
                    spans.append([t, t] if first is None else [first, last])
                    first = last = None
        text = " ".join(words)
        if len(words) != len(spans):  # a path that does not spell the words (not seen): no timing
            return text, [AlignedWord(w, -1, -1, None) for w in words]
        out = []
        for w, (a, b) in zip(words, spans):
            conf = float(np.mean([np.exp(logprobs[t, path[t]]) for t in range(a, b + 1) if path[t] >= 0] or [0.0]))
            out.append(AlignedWord(w, a, b, conf))
        return text, out

    def _best(self, logprobs: np.ndarray, decoder: Any = None):
        if self._decoder is None:
            raise RuntimeError("call set_weights(alpha, beta) before decode()")
        em = np.ascontiguousarray(logprobs, dtype=np.float32)
        results = (decoder or self._decoder).decode(em.ctypes.data, em.shape[0], em.shape[1])
        return results[0] if results else None


class StreamDecoder:
    """One stream's beam search (:meth:`BeamSearch.stream_decoder`)."""

    def __init__(self, search: BeamSearch, decoder: Any, names: list[str] | None):
        self.search, self.decoder, self.names = search, decoder, names
        self.keep: Any = None  # what the decoder refers to and must outlive it
        self.logprobs: list[np.ndarray] = []
        decoder.decode_begin()

    def feed(self, logprobs: np.ndarray) -> None:
        if logprobs.shape[0]:
            em = np.ascontiguousarray(logprobs, dtype=np.float32)
            self.logprobs.append(em)
            self.decoder.decode_step(em.ctypes.data, em.shape[0], em.shape[1])

    def partial(self) -> str:
        """The best hypothesis so far."""
        return self.search.text(self.decoder.get_best_hypothesis(), self.names) if self.logprobs else ""

    def finish(self) -> tuple[str, list[AlignedWord]]:
        if not self.logprobs:
            return "", []
        self.decoder.decode_end()
        results = self.decoder.get_all_final_hypothesis()
        return self.search.aligned(results[0] if results else None, np.concatenate(self.logprobs), self.names)


class _BoostedLM(LM):
    """The word KenLM with a bonus on some words' log-scores; word indices from ``n_base`` on
    (hotwords the lexicon lacks) are scored as the LM's unknown word."""

    def __init__(self, base: KenLM, unk: int, n_base: int, bonus: dict[int, float]):
        LM.__init__(self)
        self.base, self.unk, self.n_base, self.bonus = base, unk, n_base, bonus
        self.inner: dict[LMState, Any] = {}  # our state -> the KenLM's

    def start(self, start_with_nothing: bool) -> LMState:  # a decode begins: earlier states are done with
        state = LMState()
        self.inner = {state: self.base.start(start_with_nothing)}
        return state

    def score(self, state: LMState, usr_index: int) -> tuple[LMState, float]:
        inner, score = self.base.score(self.inner[state], usr_index if usr_index < self.n_base else self.unk)
        out = state.child(usr_index)
        self.inner[out] = inner
        return out, score + self.bonus.get(usr_index, 0.0)

    def finish(self, state: LMState) -> tuple[LMState, float]:
        inner, score = self.base.finish(self.inner[state])
        out = state.child(-1)
        self.inner[out] = inner
        return out, score


@dataclass(frozen=True)
class AlignedWord:
    """A decoded word: its first and last output frame (-1 when unknown) and confidence."""

    word: str
    first_frame: int
    last_frame: int
    confidence: float | None


def greedy_decode(logprobs: np.ndarray, tokenizer: Tokenizer) -> str:
    return tokenizer.greedy(logprobs.argmax(-1).tolist())

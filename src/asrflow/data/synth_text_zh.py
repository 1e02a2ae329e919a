"""Seeded Mandarin sentence generator for the embedded Mandarin corpus (``synth_zh``).

Sentences are words from the hand-written lists in ``synth_words_zh.yaml`` (simplified
characters, no digits or punctuation) put into a few templates, joined by spaces as
AISHELL-1's transcripts are word-segmented. Word ``i`` of a list is drawn with weight
``1/i**zipf`` (Zipf's law, whose exponent is about 1 for a language's words): the lists'
~2,000 characters then occur as a language's do, a core heard often and a long tail heard
rarely or never. params.yaml's ``word_zipf`` sets the exponent (the README has what each
costs the 15-minute chain); the manifest stage removes the spaces, so the
recognizer sees characters. Deterministic as :mod:`asrflow.data.synth_text` is: one
``random.Random(seed)`` per generator, lists in file order, no set iterated for a choice.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import yaml

from asrflow.data.synth_text import generate_splits as _generate_splits

_LISTS: dict[str, Any] = yaml.safe_load(resources.files("asrflow.data").joinpath("synth_words_zh.yaml")
                                        .read_text(encoding="utf-8"))
PEOPLE = tuple(_LISTS["people"]) + tuple(_LISTS["names"])
PLACES = tuple(_LISTS["places"])
THINGS = tuple((mw, tuple(nouns)) for mw, nouns in _LISTS["things"])
NOUNS = tuple(n for _, nouns in THINGS for n in nouns)
FUNCTION_WORDS = ("在", "了", "觉得", "这", "我们", "一起", "去", "的", "打算", "请", "你", "把", "那", "交给", "和", "找",
                  "说", "件", "事情", "真是", "做事", "总是")
#: Open-class words a held-out (out-of-vocabulary) choice is made from.
OOV_SOURCES = (PEOPLE, PLACES, NOUNS, tuple(_LISTS["adjectives"]), tuple(_LISTS["idioms"]))


@functools.lru_cache(maxsize=None)
def _zipf(n: int, exponent: float) -> tuple[float, ...]:
    """Cumulative weights 1/1**s, 1/2**s, ..., 1/n**s."""
    return tuple(itertools.accumulate(1 / i ** exponent for i in range(1, n + 1)))


class SentenceGenerator:
    """``sentence()``: one Mandarin sentence, words separated by spaces."""

    def __init__(self, seed: int, zipf: float = 1.0):
        self.rng = random.Random(seed)
        self.zipf = zipf
        self.templates = (self._bought, self._opinion, self._together, self._place_is, self._plans, self._hand_over,
                          self._meet, self._went_to, self._idiom_said, self._idiom_habit)

    def _zipf_choice(self, seq: Sequence) -> Any:
        return self.rng.choices(seq, cum_weights=_zipf(len(seq), self.zipf))[0]

    def _pick(self, key: str | tuple) -> str:
        return self._zipf_choice(_LISTS[key] if isinstance(key, str) else key)

    def _thing(self) -> tuple[str, str]:
        mw, nouns = self._zipf_choice(THINGS)
        return mw, self._zipf_choice(nouns)

    def _bought(self) -> list[str]:
        mw, noun = self._thing()
        return [self._pick("times"), self._pick(PEOPLE), "在", self._pick(PLACES), self._pick("verbs_thing"), "了",
                self._pick("numbers"), mw, self._pick("adjectives"), "的", noun]

    def _opinion(self) -> list[str]:
        mw, noun = self._thing()
        return [self._pick(PEOPLE), "觉得", "这", mw, noun, self._pick("adverbs"), self._pick("adjectives")]

    def _together(self) -> list[str]:
        return [self._pick("times"), "我们", "一起", "去", self._pick(PLACES), self._pick("activities")]

    def _place_is(self) -> list[str]:
        return [self._pick(PLACES), "的", self._pick(NOUNS), self._pick("adverbs"), self._pick("adjectives")]

    def _plans(self) -> list[str]:
        return [self._pick(PEOPLE), "打算", self._pick("times"), self._pick("verbs_place"), self._pick(PLACES)]

    def _hand_over(self) -> list[str]:
        mw, noun = self._thing()
        return ["请", "你", "把", "那", mw, self._pick("adjectives"), "的", noun, "交给", self._pick(PEOPLE)]

    def _meet(self) -> list[str]:
        return [self._pick(PEOPLE), "和", self._pick(PEOPLE), self._pick("times"), "在", self._pick(PLACES),
                self._pick("activities")]

    def _went_to(self) -> list[str]:
        return [self._pick("times"), self._pick(PEOPLE), "去", self._pick(PLACES), "找", self._pick(PEOPLE),
                self._pick("activities")]

    def _idiom_said(self) -> list[str]:
        return [self._pick("times"), self._pick(PEOPLE), "说", "这", "件", "事情", "真是", self._pick("idioms")]

    def _idiom_habit(self) -> list[str]:
        return [self._pick(PEOPLE), "做事", "总是", self._pick("idioms")]

    def sentence(self) -> str:
        return " ".join(self.rng.choice(self.templates)())


def vocabulary() -> list[str]:
    """Every word a sentence can hold (sorted)."""
    gen_words = {w for v in _LISTS.values() if isinstance(v, list) and all(isinstance(x, str) for x in v) for w in v}
    return sorted(gen_words | set(NOUNS) | {mw for mw, _ in THINGS} | set(FUNCTION_WORDS))


def characters() -> list[str]:
    """Every character a sentence can hold (sorted)."""
    return sorted({c for w in vocabulary() for c in w})


def held_out_words(fraction: float, seed: int, zipf: float = 1.0) -> frozenset[str]:
    """Words kept out of every split but the out-of-vocabulary ones (dev and test): a seeded
    choice of open-class words (:data:`OOV_SOURCES`) whose share of the word tokens of freely
    generated sentences, estimated on a sample, first reaches ``fraction``; the characters
    only they have are then unheard in training too."""
    if fraction <= 0:
        return frozenset()
    gen = SentenceGenerator(seed + 7919, zipf)
    counts: dict[str, int] = {}
    for _ in range(4000):
        for w in gen.sentence().split():
            counts[w] = counts.get(w, 0) + 1
    units = sorted({w for group in OOV_SOURCES for w in group})
    random.Random(seed + 104729).shuffle(units)
    held, share, total = set(), 0, sum(counts.values())
    for w in units:
        if share >= fraction * total:
            break
        held.add(w)
        share += counts.get(w, 0)
    return frozenset(held)


def generate_splits(sizes: dict[str, int], seed: int, held_out: frozenset[str] = frozenset(),
                    oov_splits: Iterable[str] = (), zipf: float = 1.0) -> dict[str, list[str]]:
    """Disjoint lists of unique sentences, as :func:`asrflow.data.synth_text.generate_splits`."""
    return _generate_splits(sizes, seed, held_out, oov_splits, generator=functools.partial(SentenceGenerator,
                                                                                          zipf=zipf))

"""Tests for asrflow.data.synth_text (the seeded synthetic sentence generator)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import asrflow
from asrflow.data import synth_text
from asrflow.data.synth_text import SentenceGenerator, generate_splits, sentence_words, vocabulary

WORD_RE = re.compile(r"^[a-z']+$")
SIZES = {"train": 2000, "dev": 200, "test": 200, "lm": 20000}


@pytest.fixture(scope="module")
def many() -> list[str]:
    gen = SentenceGenerator(1234)
    return [gen.sentence() for _ in range(20000)]


def test_same_seed_same_output() -> None:
    a, b = SentenceGenerator(7), SentenceGenerator(7)
    assert [a.sentence() for _ in range(500)] == [b.sentence() for _ in range(500)]


def test_different_seed_different_output() -> None:
    a, b = SentenceGenerator(7), SentenceGenerator(8)
    assert [a.sentence() for _ in range(50)] != [b.sentence() for _ in range(50)]


def test_global_random_state_irrelevant() -> None:
    import random

    random.seed(1)
    first = [SentenceGenerator(3).sentence() for _ in range(5)]
    random.seed(2)
    random.random()
    second = [SentenceGenerator(3).sentence() for _ in range(5)]
    assert first == second


_CHILD = (
    "import json\n"
    "from asrflow.data.synth_text import generate_splits, vocabulary\n"
    "print(json.dumps({'splits': generate_splits({'a': 300, 'b': 50}, 99), 'vocab': vocabulary()}))\n"
)


def _run_child(hashseed: str) -> dict:
    src = str(Path(asrflow.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = hashseed
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                          check=True, timeout=60)
    return json.loads(proc.stdout)


def test_independent_of_hash_seed_and_process() -> None:
    one = _run_child("1")
    two = _run_child("4242")
    assert one == two
    assert one["splits"] == generate_splits({"a": 300, "b": 50}, 99)
    assert one["vocab"] == vocabulary()


def test_splits_sized_unique_disjoint_and_deterministic() -> None:
    splits = generate_splits(SIZES, 0)
    assert list(splits) == list(SIZES)
    for name, n in SIZES.items():
        assert len(splits[name]) == n
        assert len(set(splits[name])) == n
    union = [s for lst in splits.values() for s in lst]
    assert len(set(union)) == len(union)
    assert generate_splits(SIZES, 0) == splits
    assert generate_splits(SIZES, 1) != splits


def test_splits_follow_key_order() -> None:
    a = generate_splits({"x": 30, "y": 10}, 5)
    b = generate_splits({"y": 10, "x": 30}, 5)
    assert list(b) == ["y", "x"]
    assert a["x"][:10] == b["y"]


def test_splits_zero_and_bad_sizes() -> None:
    assert generate_splits({"a": 0, "b": 3}, 0)["a"] == []
    with pytest.raises(ValueError):
        generate_splits({"a": -1}, 0)


def test_splits_raise_when_unique_space_exhausted(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real sentence space is far too large to exhaust, so shrink it to 3 sentences.
    pool = ["one two three four five", "six seven eight nine ten", "a b c d e"]
    counter = iter(range(10**9))
    monkeypatch.setattr(SentenceGenerator, "sentence", lambda self: pool[next(counter) % 3])
    with pytest.raises(ValueError, match=r"asked for 5 .*produced only 3"):
        generate_splits({"a": 2, "b": 3}, 0)


def test_vocabulary_size_and_format() -> None:
    vocab = vocabulary()
    assert vocab == sorted(vocab)
    assert len(vocab) == len(set(vocab))
    assert len(vocab) >= 1200
    assert all(WORD_RE.match(w) for w in vocab)
    assert sum("'" in w for w in vocab) <= 5


def test_sentences_well_formed(many: list[str]) -> None:
    vocab = set(vocabulary())
    for s in many:
        words = s.split(" ")
        assert synth_text.MIN_WORDS <= len(words) <= synth_text.MAX_WORDS, s
        assert all(WORD_RE.match(w) for w in words), s
        assert set(words) <= vocab, s


def test_vocabulary_is_used(many: list[str]) -> None:
    assert len(sentence_words(many)) >= 1000


def test_articles(many: list[str]) -> None:
    for s in many:
        words = s.split()
        for w, nxt in zip(words, words[1:]):
            if w == "a":
                assert nxt[0] not in "aeio", s
            if w == "an":
                assert nxt[0] in "aeiou" or nxt.startswith("hon") or nxt == "hour", s


def test_held_out_words_reach_only_the_oov_splits():
    """dev/test hold words no training sentence or LM sentence has, at about the asked share
    of their tokens; with no held-out words the splits are what they always were."""
    from asrflow.data.synth_text import held_out_words

    sizes = {"train": 1500, "dev": 300, "test": 300, "lm": 3000}
    held = held_out_words(0.05, 1234)
    assert held and held == held_out_words(0.05, 1234) and not held_out_words(0.0, 1234)
    out = generate_splits(sizes, 1234, held_out=held, oov_splits=("dev", "test"))
    seen = sentence_words(out["train"]) | sentence_words(out["lm"])
    assert not held & seen
    for split in ("dev", "test"):
        tokens = [w for s in out[split] for w in s.split()]
        share = sum(w in held for w in tokens) / len(tokens)
        assert 0.03 < share < 0.07, (split, share)
    assert generate_splits(sizes, 1234, held_out=frozenset()) == generate_splits(sizes, 1234)

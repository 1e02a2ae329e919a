import random

import jiwer
import pytest

from asrflow.scoring.metrics import char_errors, corpus_rates, word_errors
from asrflow.text.vocab import BLANK, SPACE, Tokenizer, build_vocab, normalize, read_vocab, write_vocab


def test_vocab_roundtrip_and_threshold(tmp_path):
    tokens, dropped = build_vocab(["ab ba", "abc"], min_count=2)
    assert tokens == [BLANK, SPACE, "a", "b"] and dropped == {"c": 1}
    write_vocab(tokens, tmp_path / "v.txt")
    assert read_vocab(tmp_path / "v.txt") == tokens


def test_tokenizer_encode_greedy():
    tok = Tokenizer([BLANK, SPACE, "a", "b"])
    ids = tok.encode("ab ba")
    assert tok.decode(ids) == "ab ba"
    # CTC path: repeats collapse, blanks separate real repeats
    assert tok.greedy([2, 2, 0, 3, 1, 1, 3, 0, 2]) == "ab ba"
    with pytest.raises(KeyError, match="'z'"):
        tok.encode("z")


def test_normalize():
    assert normalize("  HELLO   World\t") == "hello world"


def _jiwer_errors(out) -> int:
    return out.substitutions + out.deletions + out.insertions


def test_error_totals_match_jiwer_on_random_pairs():
    rng = random.Random(0)
    words = "a b c d e f".split()
    for _ in range(2000):
        ref = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
        hyp = " ".join(rng.choice(words) for _ in range(rng.randint(0, 8)))
        assert word_errors(ref, hyp).errors == _jiwer_errors(jiwer.process_words(ref, hyp))
        assert char_errors(ref, hyp).errors == _jiwer_errors(jiwer.process_characters(ref, hyp))


def test_corpus_rates():
    r = corpus_rates(["the cat sat", "a dog"], ["the cat sat", "a log ran"])
    assert r["words"] == 5 and r["substitutions"] == 1 and r["insertions"] == 1
    assert r["wer"] == pytest.approx(40.0)

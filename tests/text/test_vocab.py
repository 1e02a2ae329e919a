"""The character vocabulary and tokenizer: the file round trip, the count threshold, CTC
encoding and greedy collapse, transcript normalisation."""

import pytest

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

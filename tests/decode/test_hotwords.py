"""Hotwords and streaming: the real beam search and KenLM (built by lmplz over a few sentences) on CTC
emissions made to spell a chosen sentence, a letter per frame with some probability mass
on every other token."""

from __future__ import annotations


import numpy as np
import pytest

from asrflow.decode.beam import BeamConfig, BeamSearch
from serve_fixtures import TOKENS, make_lm


def spelling(text: str, p: float = 0.6, confusions: dict[int, dict[str, float]] | None = None) -> np.ndarray:
    """(frames, vocab) log-probs: each character of ``text`` over two frames and a blank
    frame; ``confusions``: at the n-th character, probabilities for other characters."""
    rows = []
    for n, ch in enumerate(text):
        row = np.full(len(TOKENS), 0.02)
        row[TOKENS.index("|" if ch == " " else ch)] = p
        for other, q in (confusions or {}).get(n, {}).items():
            row[TOKENS.index(other)] = q
        rows += [row, row, np.eye(len(TOKENS))[0] * 0.8 + 0.01]
    lp = np.log(np.array(rows, dtype=np.float64))
    return (lp - np.log(np.exp(lp).sum(1, keepdims=True))).astype(np.float32)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    s = BeamSearch(TOKENS, make_lm(tmp_path_factory.mktemp("lm")), BeamConfig(beam_size=8, beam_threshold=25.0,
                                                                                 token_beam=0, mode="lexicon"))
    s.set_weights(0.5, 1.0)
    return s


def test_a_word_missing_from_the_lexicon_is_spelled_when_asked_for(search):
    lp = spelling("the hotdog")
    assert "hotdog" not in search.decode(lp).split()  # the base decoder cannot spell it
    text, words = search.decode_aligned(lp, hotwords=["hotdog"])
    assert text == "the hotdog" and [w.word for w in words] == ["the", "hotdog"]
    assert words[1].first_frame > words[0].last_frame


def test_boosting_a_lexicon_word_fixes_what_the_base_decoder_gets_wrong(search):
    # "the cat", with the acoustics leaning to 'r' over 'c': the base decoder hears "rat"
    lp = spelling("the cat", confusions={4: {"r": 0.65}})
    assert search.decode(lp) == "the rat"
    assert search.decode_aligned(lp, hotwords=["cat"])[0] == "the cat"
    assert search.decode_aligned(lp, hotwords=["the cat"])[0] == "the cat"  # a phrase: each word boosted
    assert search.decode(lp) == "the rat"  # the base decoder is left as it was
    with pytest.raises(ValueError, match="cannot spell: 9"):
        search.decode_aligned(lp, hotwords=["cat9"])


def test_the_boost_is_a_log_score_bonus(search):
    lp = spelling("the cat", confusions={4: {"r": 0.65}})
    assert search.decode_aligned(lp, hotwords=["cat"], boost=0.0)[0] == "the rat"
    assert 0 < search.decode_aligned(lp, hotwords=["cat"], boost=10.0)[1][1].confidence <= 1


def test_a_stream_decoder_gives_partials_then_the_offline_result(search):
    lp = spelling("the cat sat on the mat", confusions={4: {"r": 0.65}})
    for hotwords in (None, ["cat"]):
        stream = search.stream_decoder(hotwords)
        partials = []
        for i in range(0, lp.shape[0], 7):
            stream.feed(lp[i:i + 7])
            partials.append(stream.partial())
        assert stream.finish() == search.decode_aligned(lp, hotwords)
        assert partials[len(partials) // 2].split()[:1] == ["the"] and partials[-1] == search.decode_aligned(
            lp, hotwords)[0].rsplit(" ", 1)[0] or partials[-1] == search.decode_aligned(lp, hotwords)[0], partials

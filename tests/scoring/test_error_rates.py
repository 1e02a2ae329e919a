"""Word and character error counts equal jiwer's on random pairs; corpus rates."""

import random

import jiwer
import pytest

from asrflow.scoring.metrics import char_errors, corpus_rates, word_errors


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


def test_a_best_point_on_the_grid_edge_is_named():
    from asrflow.scoring.metrics import best_point, grid_edges

    grid = [{"alpha": a, "beta": b, "wer": w, "cer": 0.0}
            for a, b, w in [(0.0, -1.0, 9.0), (0.0, 2.5, 5.0), (1.0, -1.0, 8.0), (1.0, 2.5, 4.0), (0.5, 1.0, 6.0)]]
    assert grid_edges(grid, best_point(grid)) == ["alpha = 1.0, the grid's maximum", "beta = 2.5, the grid's maximum"]
    inner = [{**r, "wer": 1.0 if (r["alpha"], r["beta"]) == (0.5, 1.0) else r["wer"]} for r in grid]
    assert grid_edges(inner, best_point(inner)) == []

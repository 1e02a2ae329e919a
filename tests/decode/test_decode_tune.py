"""Flashlight decoding (greedy, lexicon, lexicon-free) with a real KenLM model, and the alpha/beta grid."""

import os

import pytest

import asrflow.decode.search as tune_mod
from asrflow.decode.beam import BeamConfig, BeamSearch, DecodeSetupError, greedy_decode
from asrflow.decode.search import grid_from_params, make_grid, run_grid
from asrflow.scoring.metrics import best_point
from asrflow.text.lm import LMConfig, build_lm
from asrflow.text.vocab import Tokenizer
from conftest import REPO, config
from ctc_fixtures import ALPHABET, SENTENCES, TOKENS, emissions


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    m = build_lm(SENTENCES + ["CAFÉ au  lait!"], ALPHABET, d, config(LMConfig, "lm", order=3, char_order=5))
    assert (m["chars_removed"], m["lines_changed"]) == (2, 1)  # É and !, the rest kept
    assert m["vocabulary"] == len({w for s in SENTENCES for w in s.split()}) + 3  # + caf, au, lait
    assert m["discount_fallback"] == 1 and m["char_discount_fallback"] == 1  # tiny repetitive text: lmplz said so
    assert (d / "lm.bin").stat().st_size > 0 and (d / "char.bin").stat().st_size > 0
    assert "hello\th e l l o |" in (d / "lexicon.txt").read_text()
    assert not list(d.glob(".*part"))
    return d


def test_greedy_and_beam_recover_text(lm_dir):
    em = emissions("hello world")
    assert greedy_decode(em, Tokenizer(TOKENS)) == "hello world"
    bs = BeamSearch(TOKENS, lm_dir, config(BeamConfig, "decode", beam_size=10))
    bs.set_weights(0.5, 0.0)
    assert bs.decode(em) == "hello world"


def test_lexicon_corrects_a_misspelling(lm_dir):
    bs = BeamSearch(TOKENS, lm_dir, config(BeamConfig, "decode", beam_size=20))
    bs.set_weights(1.0, 0.0)
    em = emissions("the cat sxt on the mat")
    assert greedy_decode(em, Tokenizer(TOKENS)) == "the cat sxt on the mat"
    assert bs.decode(em) == "the cat sat on the mat"


def test_lexicon_free_spells_words_outside_the_lexicon(lm_dir):
    free = BeamSearch(TOKENS, lm_dir, config(BeamConfig, "decode", beam_size=20, mode="lexicon_free"))
    free.set_weights(0.3, 0.0)
    assert free.decode(emissions("hello world")) == "hello world"
    assert free.decode(emissions("hello zorld")) == "hello zorld"  # not a lexicon word: only lexicon-free can say it
    lex = BeamSearch(TOKENS, lm_dir, config(BeamConfig, "decode", beam_size=20))
    lex.set_weights(0.3, 0.0)
    assert lex.decode(emissions("hello zorld")) != "hello zorld"


def test_lexicon_free_without_a_char_lm_says_which_param(tmp_path):
    build_lm(SENTENCES, ALPHABET, tmp_path, config(LMConfig, "lm", order=3, char_order=0))
    with pytest.raises(DecodeSetupError, match="lm.char_order"):
        BeamSearch(TOKENS, tmp_path, config(BeamConfig, "decode", mode="lexicon_free"))


def test_token_beam_and_threshold_prune(lm_dir):
    em = emissions("the cat sat on the mat", noise=3.0, seed=0)
    greedy = greedy_decode(em, Tokenizer(TOKENS))
    assert greedy != "the cat sat on the mat"

    def decode(**kw):
        bs = BeamSearch(TOKENS, lm_dir, config(BeamConfig, "decode", beam_size=20, mode="lexicon_free", **kw))
        bs.set_weights(1.0, 0.0)
        return bs.decode(em)

    assert decode() == "the cat sat on the mat"  # the character LM repairs the noisy frames
    assert decode(token_beam=1) == greedy  # one token per frame: nothing left to choose
    assert decode(beam_threshold=0.001) not in ("the cat sat on the mat", greedy)  # a near-greedy beam


def grid_inputs():
    refs = ["the cat sat on the mat", "hello world", "the dog sat on the log"]
    return refs, [emissions(r, noise=3.0, seed=i) for i, r in enumerate(refs)]


def test_grid_parallel_equals_serial(lm_dir):
    refs, lps = grid_inputs()
    grid = make_grid((0.0, 2.0), 3, (-1.0, 1.0), 2)
    assert len(grid) == 6 and grid[0].alpha == 0.0 and grid[-1].beta == 1.0
    cfg = config(BeamConfig, "decode", beam_size=10)
    serial = run_grid(grid, lps, refs, TOKENS, lm_dir, cfg, workers=1)
    parallel = run_grid(grid, lps, refs, TOKENS, lm_dir, cfg, workers=2)
    assert serial == parallel
    assert [(r["alpha"], r["beta"]) for r in serial] == [(p.alpha, p.beta) for p in grid]
    assert best_point(serial)["wer"] == min(r["wer"] for r in serial)


def test_grid_loads_the_lm_once_per_worker_not_per_point(lm_dir, tmp_path, monkeypatch):
    log = tmp_path / "loads"

    class CountingSearch(BeamSearch):
        def __init__(self, *a, **k):
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")
            super().__init__(*a, **k)

    monkeypatch.setattr(tune_mod, "BeamSearch", CountingSearch)  # fork: workers inherit the patch
    refs, lps = grid_inputs()
    grid = make_grid((0.0, 2.0), 5, (-1.0, 1.0), 4)
    rows = run_grid(grid, lps, refs, TOKENS, lm_dir, config(BeamConfig, "decode", beam_size=10), workers=2)
    assert len(rows) == 20
    pids = log.read_text().split()
    assert len(pids) == len(set(pids)) == 2 and str(os.getpid()) not in pids


def test_default_grid_has_the_seeds_shape():
    import yaml
    t = yaml.safe_load((REPO / "params.yaml").read_text())["tune"]
    assert (t["alpha_count"], t["beta_count"]) == (45, 8)
    assert len(grid_from_params(t)) == 360
    # the mode tuned beside it searches its own coarser grid over the same ranges; null: the same grid
    beside = grid_from_params(t, beside=True)
    assert len(beside) == t["beside_counts"][0] * t["beside_counts"][1] < 360
    ends = lambda g, k: (min(getattr(p, k) for p in g), max(getattr(p, k) for p in g))  # noqa: E731
    assert all(ends(beside, k) == ends(grid_from_params(t), k) == tuple(t[k]) for k in ("alpha", "beta"))
    assert grid_from_params({**t, "beside_counts": None}, beside=True) == grid_from_params(t)

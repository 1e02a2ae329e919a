import numpy as np
import pytest

from asrflow.decode import BeamConfig, BeamSearch, greedy_decode
from asrflow.lm import build_lm, prepare_text
from asrflow.text import BLANK, SPACE, Tokenizer
from asrflow.tune import best_point, make_grid, run_grid

TOKENS = [BLANK, SPACE] + list("abcdefghijklmnopqrstuvwxyz'")
SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a cat ate the rat", "hello world",
             "the world is round", "hello there cat"] * 5


def emissions(text: str, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Peaky CTC log-probs spelling ``text`` (each char 2 frames, blanks between)."""
    rng = np.random.default_rng(seed)
    ids = [TOKENS.index(SPACE if c == " " else c) for c in text]
    frames = []
    for i in ids:
        frames += [i, i, 0]
    logits = rng.normal(0, noise, (len(frames), len(TOKENS))) if noise else np.zeros((len(frames), len(TOKENS)))
    logits[np.arange(len(frames)), frames] += 8.0
    return (logits - np.log(np.exp(logits).sum(1, keepdims=True))).astype(np.float32)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    text, skipped = prepare_text(SENTENCES + ["CAFÉ au lait"], set(TOKENS[2:]))
    assert skipped == 1
    m = build_lm(text, d, order=3)
    assert m["vocabulary"] == len({w for s in SENTENCES for w in s.split()})
    assert m["discount_fallback"] == 1  # tiny repetitive text needs it; lmplz said so
    assert (d / "lm.bin").stat().st_size > 0
    assert "hello\th e l l o |" in (d / "lexicon.txt").read_text()
    return d


def test_greedy_and_beam_recover_text(lm_dir):
    em = emissions("hello world")
    assert greedy_decode(em, Tokenizer(TOKENS)) == "hello world"
    bs = BeamSearch(TOKENS, lm_dir / "lm.bin", lm_dir / "lexicon.txt", BeamConfig(beam_size=10))
    bs.set_weights(0.5, 0.0)
    assert bs.decode(em) == "hello world"


def test_lexicon_corrects_a_misspelling(lm_dir):
    bs = BeamSearch(TOKENS, lm_dir / "lm.bin", lm_dir / "lexicon.txt", BeamConfig(beam_size=20))
    bs.set_weights(1.0, 0.0)
    em = emissions("the cat sxt on the mat")
    assert greedy_decode(em, Tokenizer(TOKENS)) == "the cat sxt on the mat"
    assert bs.decode(em) == "the cat sat on the mat"


def test_grid_parallel_equals_serial(lm_dir):
    refs = ["the cat sat on the mat", "hello world", "the dog sat on the log"]
    lps = [emissions(r, noise=3.0, seed=i) for i, r in enumerate(refs)]
    grid = make_grid((0.0, 2.0), 3, (-1.0, 1.0), 2)
    assert len(grid) == 6 and grid[0].alpha == 0.0 and grid[-1].beta == 1.0
    cfg = BeamConfig(beam_size=10)
    serial = run_grid(grid, lps, refs, TOKENS, lm_dir / "lm.bin", lm_dir / "lexicon.txt", cfg, workers=1)
    parallel = run_grid(grid, lps, refs, TOKENS, lm_dir / "lm.bin", lm_dir / "lexicon.txt", cfg, workers=2)
    assert serial == parallel
    assert best_point(serial)["wer"] == min(r["wer"] for r in serial)

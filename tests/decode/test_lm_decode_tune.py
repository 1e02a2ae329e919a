"""KenLM building (lmplz/build_binary for real), flashlight decoding, and the alpha/beta grid."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import asrflow.decode.search as tune_mod
from asrflow.decode.beam import BeamConfig, BeamSearch, DecodeSetupError, greedy_decode
from asrflow.text.lm import LMConfig, LMError, build_lm, normalize_line, perplexity, run_lmplz
from asrflow.data.synth_text import generate_splits
from asrflow.text.vocab import BLANK, SPACE, Tokenizer
from asrflow.scoring.metrics import best_point
from asrflow.decode.search import grid_from_params, make_grid, run_grid
from conftest import REPO

TOKENS = [BLANK, SPACE] + list("abcdefghijklmnopqrstuvwxyz'")
ALPHABET = set(TOKENS[2:])
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
    m = build_lm(SENTENCES + ["CAFÉ au  lait!"], ALPHABET, d, LMConfig(order=3, char_order=5))
    assert (m["chars_removed"], m["lines_changed"]) == (2, 1)  # É and !, the rest kept
    assert m["vocabulary"] == len({w for s in SENTENCES for w in s.split()}) + 3  # + caf, au, lait
    assert m["discount_fallback"] == 1 and m["char_discount_fallback"] == 1  # tiny repetitive text: lmplz said so
    assert (d / "lm.bin").stat().st_size > 0 and (d / "char.bin").stat().st_size > 0
    assert "hello\th e l l o |" in (d / "lexicon.txt").read_text()
    assert not list(d.glob(".*part"))
    return d


def test_normalisation_follows_the_seeds():
    assert normalize_line("  Hello,   WORLD!  ", ALPHABET) == ("hello world", 2)
    assert normalize_line("it's 42 o'clock", ALPHABET) == ("it's o'clock", 2)
    assert normalize_line("plain text", ALPHABET) == ("plain text", 0)


def test_discount_fallback_only_when_the_corpus_needs_it(tmp_path):
    text = generate_splits({"train": 10, "dev": 10, "test": 10, "lm": 6000}, seed=3)["lm"]
    m = build_lm(text, ALPHABET, tmp_path, LMConfig(order=3))
    assert m["discount_fallback"] == 0 and m["sentences"] == 6000


def test_top_k_maps_the_rest_to_unk_with_contexts(tmp_path):
    m = build_lm(SENTENCES, ALPHABET, tmp_path, LMConfig(order=3, top_k=3))
    assert m["vocabulary"] == 3 and m["unk_tokens"] > 0
    assert [line.split("\t")[0] for line in (tmp_path / "lexicon.txt").read_text().splitlines()] == ["cat", "hello", "the"]  # ties (2 each) alphabetically
    arpa = (tmp_path / "lm.arpa").read_text()
    assert "UNKNOWNWORD" not in arpa
    unigrams = arpa.split("\\1-grams:")[1].split("\\2-grams:")[0]
    assert sum(1 for line in unigrams.splitlines() if line.split("\t")[1:2] == ["<unk>"]) == 1
    assert int(arpa.split("ngram 1=")[1].split()[0]) == len([line for line in unigrams.splitlines() if line.strip()])
    assert "the <unk>" in arpa  # <unk> learned in context, not lmplz's context-free floor
    import kenlm
    model = kenlm.Model(str(tmp_path / "lm.bin"))
    assert "dog" not in model and "the" in model
    assert model.score("the dog", bos=False, eos=False) > model.score("zebra zebra", bos=False, eos=False) - 10


def test_prune_quantised_trie_and_perplexity(tmp_path):
    text = generate_splits({"train": 10, "dev": 50, "test": 10, "lm": 4000}, seed=5)
    full = build_lm(text["lm"], ALPHABET, tmp_path / "full", LMConfig(order=3))
    pruned = build_lm(text["lm"], ALPHABET, tmp_path / "pruned",
                      LMConfig(order=3, prune=(0, 1, 1), binary_type="trie",
                               quantize={"pointer_bits": 22, "prob_bits": 8, "backoff_bits": 8}))
    assert pruned["1grams"] == full["1grams"] and pruned["3grams"] < full["3grams"] / 2
    assert pruned["binary_mb"] < full["binary_mb"] / 2
    with open(tmp_path / "pruned/lm.bin", "rb") as f:
        assert f.read(64).startswith(b"mmap lm http://kheafield.com/code")  # a KenLM binary
    ppl = perplexity(tmp_path / "full/lm.bin", text["dev"])
    assert 1 < ppl["perplexity"] < 500 and ppl["sentences"] == 50
    scrambled = [" ".join(reversed(s.split())) for s in text["dev"]]
    assert perplexity(tmp_path / "full/lm.bin", scrambled)["perplexity"] > 2 * ppl["perplexity"]
    import kenlm
    one = text["dev"][0]
    assert perplexity(tmp_path / "full/lm.bin", [one])["perplexity"] == pytest.approx(
        kenlm.Model(str(tmp_path / "full/lm.bin")).perplexity(one), rel=1e-6)
    # the quantised trie decodes too
    bs = BeamSearch(TOKENS, tmp_path / "pruned", BeamConfig(beam_size=10))
    bs.set_weights(0.5, 0.0)
    assert bs.decode(emissions(text["dev"][1])) == text["dev"][1]


def _text_file(tmp_path: Path) -> Path:
    p = tmp_path / "text.txt"
    p.write_text("".join(s + "\n" for s in generate_splits({"train": 1, "dev": 1, "test": 1, "lm": 500}, 1)["lm"]))
    return p


def test_lmplz_out_of_disk_names_the_setting(tmp_path):
    # the kernel answers ENOSPC on every write to /dev/full
    with pytest.raises(LMError, match=r"out of disk.*'lm\.tmp_dir'"):
        run_lmplz(_text_file(tmp_path), Path("/dev/full"), 3, LMConfig(memory="50M"))


def test_lmplz_out_of_memory_names_the_setting(tmp_path):
    # a real allocation failure: lmplz asked for 4 GB of sort memory under a 1.5 GB address-space limit
    code = ("import resource, sys; from pathlib import Path\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))\n"
            "from asrflow.text.lm import LMConfig, LMError, run_lmplz\n"
            "try:\n"
            f"    run_lmplz(Path({str(_text_file(tmp_path))!r}), Path({str(tmp_path / 'x.arpa')!r}), 3, LMConfig(memory='4G'))\n"
            "except LMError as e:\n"
            "    print(str(e).splitlines()[0]); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "out of memory" in proc.stdout and "'lm.memory'" in proc.stdout and "'4G'" in proc.stdout


def test_missing_tmp_dir_is_a_clear_error(tmp_path):
    with pytest.raises(LMError, match="lm.tmp_dir"):
        build_lm(SENTENCES, ALPHABET, tmp_path / "out", LMConfig(tmp_dir=str(tmp_path / "nope")))
    assert not (tmp_path / "out/lm.arpa").exists()


def test_greedy_and_beam_recover_text(lm_dir):
    em = emissions("hello world")
    assert greedy_decode(em, Tokenizer(TOKENS)) == "hello world"
    bs = BeamSearch(TOKENS, lm_dir, BeamConfig(beam_size=10))
    bs.set_weights(0.5, 0.0)
    assert bs.decode(em) == "hello world"


def test_lexicon_corrects_a_misspelling(lm_dir):
    bs = BeamSearch(TOKENS, lm_dir, BeamConfig(beam_size=20))
    bs.set_weights(1.0, 0.0)
    em = emissions("the cat sxt on the mat")
    assert greedy_decode(em, Tokenizer(TOKENS)) == "the cat sxt on the mat"
    assert bs.decode(em) == "the cat sat on the mat"


def test_lexicon_free_spells_words_outside_the_lexicon(lm_dir):
    free = BeamSearch(TOKENS, lm_dir, BeamConfig(beam_size=20, mode="lexicon_free"))
    free.set_weights(0.3, 0.0)
    assert free.decode(emissions("hello world")) == "hello world"
    assert free.decode(emissions("hello zorld")) == "hello zorld"  # not a lexicon word: only lexicon-free can say it
    lex = BeamSearch(TOKENS, lm_dir, BeamConfig(beam_size=20))
    lex.set_weights(0.3, 0.0)
    assert lex.decode(emissions("hello zorld")) != "hello zorld"


def test_lexicon_free_without_a_char_lm_says_which_param(tmp_path):
    build_lm(SENTENCES, ALPHABET, tmp_path, LMConfig(order=3))
    with pytest.raises(DecodeSetupError, match="lm.char_order"):
        BeamSearch(TOKENS, tmp_path, BeamConfig(mode="lexicon_free"))


def test_token_beam_and_threshold_prune(lm_dir):
    em = emissions("the cat sat on the mat", noise=3.0, seed=0)
    greedy = greedy_decode(em, Tokenizer(TOKENS))
    assert greedy != "the cat sat on the mat"

    def decode(**kw):
        bs = BeamSearch(TOKENS, lm_dir, BeamConfig(beam_size=20, mode="lexicon_free", **kw))
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
    cfg = BeamConfig(beam_size=10)
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
    rows = run_grid(grid, lps, refs, TOKENS, lm_dir, BeamConfig(beam_size=10), workers=2)
    assert len(rows) == 20
    pids = log.read_text().split()
    assert len(pids) == len(set(pids)) == 2 and str(os.getpid()) not in pids


def test_default_grid_has_the_seeds_shape():
    import yaml
    t = yaml.safe_load((REPO / "params.yaml").read_text())["tune"]
    assert (t["alpha_count"], t["beta_count"]) == (45, 8)
    assert len(grid_from_params(t)) == 360

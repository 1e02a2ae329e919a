"""KenLM n-grams as the lm stage builds them: the seeds' normalisation, top-K <unk>, pruning,
quantised tries, perplexity, and clear errors for the settings lmplz runs out of."""

import subprocess
import sys
from pathlib import Path

import pytest

from asrflow.data.synth_text import generate_splits
from asrflow.decode.beam import BeamConfig, BeamSearch
from asrflow.text.lm import LMConfig, LMError, build_lm, normalize_line, perplexity, run_lmplz
from conftest import REPO, config
from ctc_fixtures import ALPHABET, SENTENCES, TOKENS, emissions


def test_normalisation_follows_the_seeds():
    assert normalize_line("  Hello,   WORLD!  ", ALPHABET) == ("hello world", 2)
    assert normalize_line("it's 42 o'clock", ALPHABET) == ("it's o'clock", 2)
    assert normalize_line("plain text", ALPHABET) == ("plain text", 0)


def test_discount_fallback_only_when_the_corpus_needs_it(tmp_path):
    text = generate_splits({"train": 10, "dev": 10, "test": 10, "lm": 6000}, seed=3)["lm"]
    m = build_lm(text, ALPHABET, tmp_path, config(LMConfig, "lm", order=3))
    assert m["discount_fallback"] == 0 and m["sentences"] == 6000


def test_top_k_maps_the_rest_to_unk_with_contexts(tmp_path):
    m = build_lm(SENTENCES, ALPHABET, tmp_path, config(LMConfig, "lm", order=3, top_k=3))
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
    full = build_lm(text["lm"], ALPHABET, tmp_path / "full", config(LMConfig, "lm", order=3))
    pruned = build_lm(text["lm"], ALPHABET, tmp_path / "pruned",
                      config(LMConfig, "lm", order=3, prune=(0, 1, 1), binary_type="trie",
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
    bs = BeamSearch(TOKENS, tmp_path / "pruned", config(BeamConfig, "decode", beam_size=10))
    bs.set_weights(0.5, 0.0)
    assert bs.decode(emissions(text["dev"][1])) == text["dev"][1]


def _text_file(tmp_path: Path) -> Path:
    p = tmp_path / "text.txt"
    p.write_text("".join(s + "\n" for s in generate_splits({"train": 1, "dev": 1, "test": 1, "lm": 500}, 1)["lm"]))
    return p


def test_lmplz_out_of_disk_names_the_setting(tmp_path):
    # the kernel answers ENOSPC on every write to /dev/full
    with pytest.raises(LMError, match=r"out of disk.*'lm\.tmp_dir'"):
        run_lmplz(_text_file(tmp_path), Path("/dev/full"), 3, config(LMConfig, "lm", memory="50M"))


def test_lmplz_out_of_memory_names_the_setting(tmp_path):
    # a real allocation failure: lmplz asked for 4 GB of sort memory under a 1.5 GB address-space limit
    code = ("import resource, sys; from pathlib import Path\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))\n"
            "import yaml; from asrflow.text.lm import LMConfig, LMError, run_lmplz\n"
            "cfg = LMConfig.from_params({**yaml.safe_load(open('params.yaml'))['lm'], 'memory': '4G'})\n"
            "try:\n"
            f"    run_lmplz(Path({str(_text_file(tmp_path))!r}), Path({str(tmp_path / 'x.arpa')!r}), 3, cfg)\n"
            "except LMError as e:\n"
            "    print(str(e).splitlines()[0]); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "out of memory" in proc.stdout and "'lm.memory'" in proc.stdout and "'4G'" in proc.stdout


def test_missing_tmp_dir_is_a_clear_error(tmp_path):
    with pytest.raises(LMError, match="lm.tmp_dir"):
        build_lm(SENTENCES, ALPHABET, tmp_path / "out", config(LMConfig, "lm", tmp_dir=str(tmp_path / "nope")))
    assert not (tmp_path / "out/lm.arpa").exists()

"""Alignment counts against jiwer, the alignment itself, and the scoring files/tables."""

import math
import random
import re

import pytest

from asrflow.scoring.metrics import align, align_counts, char_errors, corpus_rates, word_errors
from asrflow.scoring.results import (read_trn, top_errors, trn_id, wer_by_duration, write_errs, write_recogs,
                                     write_result, write_trn, write_wer_summary)

jiwer = pytest.importorskip("jiwer")

VOCAB = "a b c the cat".split()


def _mutate(rng: random.Random, words: list[str]) -> list[str]:
    """A hypothesis close to ``words``: a few random substitutions/insertions/deletions."""
    out = list(words)
    for _ in range(rng.randint(0, 4)):
        k = rng.randrange(len(out) + 1)
        op = rng.random()
        if op < 1 / 3 and k < len(out):
            out[k] = rng.choice(VOCAB)
        elif op < 2 / 3:
            out.insert(k, rng.choice(VOCAB))
        elif k < len(out):
            del out[k]
    return out


def _random_pairs(seed: int = 0, count: int = 3000) -> list[tuple[str, str]]:
    """Seeded (reference, hypothesis) strings over a small vocabulary, so that matches and
    equal-cost alignments are frequent; empty references, empty hypotheses, identical
    pairs, irregular whitespace and some long (> 64 word) pairs are all included."""
    rng = random.Random(seed)
    pairs = [("", ""), ("", "a"), ("a b", ""), ("a", "a"), ("  a   b ", "a  b")]
    for k in range(count):
        long = k % 100 == 0
        ref = [rng.choice(VOCAB[:rng.randint(2, 5)]) for _ in range(rng.randint(0, 150 if long else 9))]
        kind = rng.random()
        if kind < 0.05:
            hyp = []
        elif kind < 0.10:
            hyp = list(ref)
        elif kind < 0.50:
            hyp = _mutate(rng, ref)
        else:
            hyp = [rng.choice(VOCAB[:rng.randint(2, 5)]) for _ in range(rng.randint(0, 150 if long else 9))]
        sep = "  " if rng.random() < 0.05 else " "
        pairs.append((sep.join(ref), " ".join(hyp)))
    return pairs


PAIRS = _random_pairs()


def _collapse(text: str) -> str:
    return " ".join(text.split())


def test_random_pairs_cover_the_edge_cases():
    assert sum(1 for r, _ in PAIRS if not r.split()) >= 20
    assert sum(1 for _, h in PAIRS if not h.split()) >= 50
    assert sum(1 for r, h in PAIRS if r.split() == h.split() and r.split()) >= 100
    assert sum(1 for r, _ in PAIRS if len(r.split()) > 64) >= 10


def test_word_and_char_counts_equal_jiwer_exactly():
    mismatches = []
    for ref, hyp in PAIRS:
        o = jiwer.process_words(ref, hyp)
        for c in (word_errors(ref, hyp), align_counts(ref.split(), hyp.split())):
            if (c.substitutions, c.deletions, c.insertions, c.hits) != (o.substitutions, o.deletions,
                                                                         o.insertions, o.hits):
                mismatches.append(("word", ref, hyp, c, o.substitutions, o.deletions, o.insertions))
        rc, hc = _collapse(ref), _collapse(hyp)
        o = jiwer.process_characters(rc, hc)
        c = char_errors(ref, hyp)
        if (c.substitutions, c.deletions, c.insertions, c.hits) != (o.substitutions, o.deletions,
                                                                     o.insertions, o.hits):
            mismatches.append(("char", rc, hc, c, o.substitutions, o.deletions, o.insertions))
    assert not mismatches, f"{len(mismatches)} differ from jiwer, e.g. {mismatches[:3]}"


@pytest.mark.parametrize("ref, hyp, sdi", [
    # pairs whose S/D/I split depends on how equal-cost alignments are ranked; expected
    # values are jiwer 4.0.0's (rapidfuzz prefers deletions, then insertions, then the diagonal)
    ("c c a c b", "c b a c a a c", (0, 1, 3)),
    ("c c c a c b", "a c b c a", (1, 2, 1)),
    ("c b b b c c", "a b c a b", (2, 2, 1)),
    ("a b", "b a", (0, 1, 1)),
])
def test_tie_breaking_matches_jiwer_without_jiwer(ref, hyp, sdi):
    c = word_errors(ref, hyp)
    assert (c.substitutions, c.deletions, c.insertions) == sdi


def test_corpus_rates_equal_jiwer_wer_and_cer():
    refs = [r for r, _ in PAIRS]
    hyps = [h for _, h in PAIRS]
    rates = corpus_rates(refs, hyps)
    assert rates["wer"] == pytest.approx(100 * jiwer.wer(refs, hyps), rel=1e-12)
    assert rates["cer"] == pytest.approx(100 * jiwer.cer([_collapse(r) for r in refs],
                                                         [_collapse(h) for h in hyps]), rel=1e-12)
    # the same on non-empty references only (jiwer versions before 4 refuse empty ones)
    keep = [(r, h) for r, h in PAIRS if r.split()]
    r2, h2 = [r for r, _ in keep], [h for _, h in keep]
    assert corpus_rates(r2, h2)["wer"] == pytest.approx(100 * jiwer.wer(r2, h2), rel=1e-12)


def test_align_is_consistent_with_align_counts():
    for ref, hyp in PAIRS:
        r, h = ref.split(), hyp.split()
        pairs = align(r, h)
        assert [x for x, _ in pairs if x is not None] == r
        assert [y for _, y in pairs if y is not None] == h
        assert all(x is not None or y is not None for x, y in pairs)
        c = align_counts(r, h)
        assert sum(1 for x, y in pairs if x is not None and y is not None and x != y) == c.substitutions
        assert sum(1 for _, y in pairs if y is None) == c.deletions
        assert sum(1 for x, _ in pairs if x is None) == c.insertions
        assert sum(1 for x, y in pairs if x == y) == c.hits


def test_align_examples():
    assert align([], []) == []
    assert align("a b".split(), []) == [("a", None), ("b", None)]
    assert align([], ["x"]) == [(None, "x")]
    assert align("the cat sat".split(), "the hat sat down".split()) == [
        ("the", "the"), ("cat", "hat"), ("sat", "sat"), (None, "down")]


# ------------------------------------------------------------------ scoring files

UTTS = [
    ("u2", "a b c", "a x b c"),
    ("u1", "the cat sat on the mat", "the hat sat the mat"),
    ("u4", "on and on", "and"),
    ("u3", "a cat", "a hat"),
    ("u5", "", "uh uh"),
]


def _sections(text: str) -> dict[str, list[str]]:
    """The errs file's blank-line separated sections, keyed by the first word of their
    first line (the header block is keyed ``%WER``)."""
    out = {}
    for block in text.rstrip("\n").split("\n\n"):
        lines = block.split("\n")
        out[lines[0].split(":")[0].split()[0]] = lines
    return out


def test_write_errs_hand_checked(tmp_path):
    path = tmp_path / "errs-test-clean.txt"
    summary = write_errs(path, UTTS, "beam_a0.5_b1.0")
    text = path.read_text(encoding="utf-8")
    sec = _sections(text)

    # 14 reference words; S: cat->hat (u1, u3); D: on (u1, twice in u4); I: x, uh, uh
    assert sec["%WER"][0] == "%WER 57.14 [ 8 / 14, 3 ins, 3 del, 2 sub ]"
    assert summary["words"] == 14 and summary["errors"] == 8 and summary["hits"] == 9
    assert (summary["substitutions"], summary["deletions"], summary["insertions"]) == (2, 3, 3)
    assert summary["wer"] == pytest.approx(800 / 14)
    rates = corpus_rates([r for _, r, _ in UTTS], [h for _, _, h in UTTS])
    assert summary["wer"] == rates["wer"] and summary["cer"] == rates["cer"]
    m = re.fullmatch(r"%CER (\d+\.\d\d) \[ (\d+) / (\d+), (\d+) ins, (\d+) del, (\d+) sub \]", sec["%WER"][1])
    assert m and float(m[1]) == round(rates["cer"], 2)
    assert (int(m[2]), int(m[3])) == (summary["char_errors"], summary["chars"])
    assert "setting: beam_a0.5_b1.0" in sec["%WER"] and "utterances: 5" in sec["%WER"]

    assert sec["PER-UTTERANCE"][1:] == [
        "u1:\tthe (cat->hat) sat (on->*) the mat",
        "u2:\ta (*->x) b c",
        "u3:\ta (cat->hat)",
        "u4:\t(on->*) and (on->*)",
        "u5:\t(*->uh) (*->uh)",
    ]
    assert sec["SUBSTITUTIONS"][1:] == ["2   cat -> hat"]
    assert sec["DELETIONS"][1:] == ["3   on"]
    assert sec["INSERTIONS"][1:] == ["2   uh", "1   x"]

    rows = [line.split() for line in sec["PER-WORD"][1:]]
    assert rows[0] == ["word", "correct", "errors", "in-ref", "in-hyp"]
    stats = {r[0]: tuple(map(int, r[1:])) for r in rows[1:]}
    assert [r[0] for r in rows[1:]] == ["on", "cat", "hat", "uh", "x", "a", "and", "b", "c", "mat", "sat", "the"]
    assert stats["on"] == (0, 3, 3, 0)
    assert stats["cat"] == (0, 2, 2, 0)
    assert stats["hat"] == (0, 2, 0, 2)
    assert stats["the"] == (2, 0, 2, 2)
    assert stats["a"] == (2, 0, 2, 2)


def test_errs_sections_sorted_by_count_then_alphabetically(tmp_path):
    utts = [("x", "b a d c", "z y"), ("y", "a b", "b a q r")]
    write_errs(tmp_path / "errs.txt", utts, "s")
    sec = _sections((tmp_path / "errs.txt").read_text(encoding="utf-8"))
    for name in ("SUBSTITUTIONS", "DELETIONS", "INSERTIONS"):
        keys = [(-int(line.split()[0]), line.split(None, 1)[1]) for line in sec[name][1:]]
        assert keys == sorted(keys)
    c = sum((word_errors(r, h) for _, r, h in utts), start=word_errors("", ""))
    assert sum(int(line.split()[0]) for line in sec["SUBSTITUTIONS"][1:]) == c.substitutions
    assert sum(int(line.split()[0]) for line in sec["DELETIONS"][1:]) == c.deletions
    assert sum(int(line.split()[0]) for line in sec["INSERTIONS"][1:]) == c.insertions


def test_write_errs_is_deterministic_and_atomic(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    write_errs(a, UTTS, "s")
    write_errs(b, list(reversed(UTTS)), "s")
    assert a.read_bytes() == b.read_bytes()
    # a failed write leaves the previous file untouched and no temporary file behind
    with pytest.raises(ValueError, match="u1"):
        write_errs(a, UTTS + [("u1", "x", "y")], "s")
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_write_recogs_format(tmp_path):
    path = tmp_path / "recogs.txt"
    write_recogs(path, [("utt-b", "naïve  café", "naive cafe"), ("utt-a", "", "uh")])
    assert path.read_bytes() == (
        "utt-a:\tref=[]\n"
        "utt-a:\thyp=[uh]\n"
        "utt-b:\tref=[naïve, café]\n"
        "utt-b:\thyp=[naive, cafe]\n"
    ).encode("utf-8")


def test_write_wer_summary_sort_order(tmp_path):
    path = tmp_path / "wer-summary.txt"
    write_wer_summary(path, {"greedy": 12.5, "beam_b": 10.0, "beam_a": 10.0, "lm": 3.25, "broken": math.nan})
    assert path.read_text(encoding="utf-8") == (
        "settings\tWER\nlm\t3.25\nbeam_a\t10.00\nbeam_b\t10.00\ngreedy\t12.50\nbroken\tnan\n")


def test_top_errors():
    assert top_errors(UTTS, 3) == [("on -> *", 3), ("* -> uh", 2), ("cat -> hat", 2)]
    assert top_errors(UTTS, 100)[-1] == ("* -> x", 1) and len(top_errors(UTTS, 100)) == 4
    assert top_errors(UTTS, 0) == []
    # Mandarin: characters, not the whole unsegmented sentence as one "word"
    zh = [("u1", "今天天气很好", "今天天汽很好"), ("u2", "谢谢你", "谢你"), ("u3", "天气", "天汽")]
    assert top_errors(zh, 5, chars=True) == [("气 -> 汽", 2), ("谢 -> *", 1)]


def test_wer_by_duration_bins_and_edges():
    durations = [0.0, 1.99, 2.0, 3.0, 8.0, 100.0]
    refs = ["a b", "a b", "a b c d", "x", "a b c", ""]
    hyps = ["a b", "a", "a b c d", "y", "a c", "uh"]
    bins = wer_by_duration(durations, refs, hyps, [0, 2, 4, 8])
    assert [b["bin"] for b in bins] == ["0-2 s", "2-4 s", "4-8 s", "8+ s"]
    assert [b["utterances"] for b in bins] == [2, 2, 0, 2]  # 2.0 and 8.0 go to the upper bin
    assert [b["words"] for b in bins] == [4, 5, 0, 3]
    assert [b["errors"] for b in bins] == [1, 1, 0, 2]
    assert bins[0]["wer"] == pytest.approx(25.0)
    assert bins[1]["wer"] == pytest.approx(20.0)
    assert bins[2]["wer"] is None  # empty bin kept, no WER
    assert bins[3]["wer"] == pytest.approx(200 / 3)


def test_wer_by_duration_labels_and_errors():
    assert [b["bin"] for b in wer_by_duration([], [], [], [0.5, 1.5])] == ["0.5-1.5 s", "1.5+ s"]
    only = wer_by_duration([3.0], [""], [""], [0])
    assert only == [{"bin": "0+ s", "from_s": 0, "utterances": 1, "words": 0, "errors": 0, "wer": 0.0}]
    with pytest.raises(ValueError, match="outside"):
        wer_by_duration([0.1], ["a"], ["a"], [1, 2])
    with pytest.raises(ValueError, match="increasing"):
        wer_by_duration([], [], [], [0, 4, 2])
    with pytest.raises(ValueError, match="references"):
        wer_by_duration([1.0], ["a", "b"], ["a"], [0])


@pytest.mark.parametrize("edges", [[0, 2, 3, 4, 6, 10, 15, 20], [0, 0.5, 1.25, 2, 2.5, 12, 100.5], [0, 9, 10]])
def test_wer_by_duration_labels_sort_as_the_bins(edges):
    """Tools drawing the bins as categories (`dvc plots show`) sort their labels: zero-padded,
    they sort in the bins' order ("05-10 s" before "10-15 s")."""
    bins = wer_by_duration([], [], [], edges)
    assert [b["from_s"] for b in bins] == edges
    assert sorted(b["bin"] for b in bins) == [b["bin"] for b in bins]
    assert wer_by_duration([], [], [], [0, 5, 10])[1]["bin"] == "05-10 s"


SCLITE_UTTS = [("1089-134686-0001", "the cat sat", "the cat sat"), ("1089-134686-0000", "a b c", "a x c d"),
               ("121-7-0", "hello there", ""), ("121-7-1", "", "uh")]


def test_trn_round_trip_scores_as_the_stage(tmp_path):
    """ref/hyp trn files read back give the same corpus WER as the utterances they came from
    (and as the errs file); the result file breaks it down by speaker, its total equal."""
    assert trn_id("1089", "1089-134686-0000") == "1089-134686-0000" and trn_id("f3", "u7") == "f3-u7"
    write_trn(tmp_path / "ref.trn", [(u, r) for u, r, _ in SCLITE_UTTS])
    write_trn(tmp_path / "hyp.trn", [(u, h) for u, _, h in SCLITE_UTTS])
    assert (tmp_path / "ref.trn").read_text().splitlines() == [
        "a b c (1089-134686-0000)", "the cat sat (1089-134686-0001)", "hello there (121-7-0)", "(121-7-1)"]
    assert (tmp_path / "hyp.trn").read_text().splitlines()[2:] == ["(121-7-0)", "uh (121-7-1)"]
    ref, hyp = read_trn(tmp_path / "ref.trn"), read_trn(tmp_path / "hyp.trn")
    assert ref == {u: r for u, r, _ in SCLITE_UTTS} and hyp == {u: h for u, _, h in SCLITE_UTTS}
    rates = corpus_rates([ref[u] for u in ref], [hyp[u] for u in ref])
    errs = write_errs(tmp_path / "errs.txt", SCLITE_UTTS, "beam_lm")
    total = write_result(tmp_path / "result.txt", SCLITE_UTTS, "beam_lm")
    assert rates["wer"] == errs["wer"] == total["wer"] == pytest.approx(100 * 5 / 8)
    lines = (tmp_path / "result.txt").read_text().splitlines()
    assert lines[0] == (tmp_path / "errs.txt").read_text().splitlines()[0] == "%WER 62.50 [ 5 / 8, 2 ins, 2 del, 1 sub ]"
    table = [line.split() for line in lines[lines.index("") + 1:]]
    assert table == [["SPKR", "#Snt", "#Wrd", "#Sub", "#Del", "#Ins", "#Err", "WER%"],
                     ["1089", "2", "6", "1", "0", "1", "2", "33.33"],
                     ["121", "2", "2", "0", "2", "1", "3", "150.00"],
                     ["Sum", "4", "8", "1", "2", "2", "5", "62.50"]]

"""Detailed scoring files for one test split decoded with one setting.

Given the utterances of a split as ``(utt_id, reference, hypothesis)`` triples, this
module writes

* a *recogs* file: each utterance's reference and hypothesis word lists;
* an *errs* file: corpus %WER/%CER headers, every utterance's word alignment, and the
  substitutions, deletions and insertions counted over the split, plus per-word stats;
* a WER summary across decoding settings;
* sclite-style *trn* transcripts (``words (speaker-utterance)`` per line: what NIST sclite
  reads with ``-i spu_id`` or ``-i rm``) and a *result* file breaking the corpus WER down
  by speaker, computed with this module's own alignment (sclite itself is not needed);

and computes two report tables: the most frequent word errors and WER by utterance
duration. Words are whitespace-separated tokens; characters are counted on the text with
whitespace collapsed to single spaces, as in :mod:`asrflow.scoring.metrics`, so the figures here
equal :func:`asrflow.scoring.metrics.corpus_rates` (and jiwer) on the same texts.

Everything is deterministic (sorted by utterance id, counts, then text) and written as
UTF-8 through a temporary file in the destination folder that is renamed into place, so a
reader never sees a half-written file.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from asrflow.common.files import write_text
from asrflow.scoring.metrics import ErrorCounts, align, char_errors, word_errors

Utterance = tuple[str, str, str]
"""``(utt_id, reference, hypothesis)``."""

Pair = tuple[str | None, str | None]
"""One aligned position: (reference word, hypothesis word), ``None`` for an absent side."""

MISSING = "*"
"""Stands for the absent side of a deletion or an insertion in the errs file."""


# --------------------------------------------------------------------------- helpers

def _sorted_utts(utts: Iterable[Utterance]) -> list[Utterance]:
    """The utterances sorted by id; a repeated id is an error (the files key on it)."""
    out = sorted(utts, key=lambda u: u[0])
    for prev, cur in zip(out, out[1:]):
        if prev[0] == cur[0]:
            raise ValueError(f"utterance id {cur[0]!r} occurs more than once")
    return out


def _is_error(pair: Pair) -> bool:
    return pair[0] != pair[1]


def _error_label(pair: Pair) -> str:
    """``ref -> hyp``, ``ref -> *`` or ``* -> hyp`` for one erroneous aligned pair."""
    ref, hyp = pair
    return f"{MISSING if ref is None else ref} -> {MISSING if hyp is None else hyp}"


def _pair_text(pair: Pair) -> str:
    """A hit as the word itself, an error as ``(ref->hyp)`` with ``*`` for a missing side."""
    ref, hyp = pair
    if ref == hyp:
        return str(ref)
    return f"({MISSING if ref is None else ref}->{MISSING if hyp is None else hyp})"


def _counts(pairs: Sequence[Pair]) -> ErrorCounts:
    """S/D/I counts of one alignment (reference length = pairs with a reference side)."""
    sub = dele = ins = 0
    for ref, hyp in pairs:
        if ref is None:
            ins += 1
        elif hyp is None:
            dele += 1
        elif ref != hyp:
            sub += 1
    return ErrorCounts(sub, dele, ins, sum(1 for r, _ in pairs if r is not None))


def _header(name: str, c: ErrorCounts) -> str:
    """Kaldi-style ``%WER 12.34 [ 56 / 454, 3 ins, 10 del, 43 sub ]``."""
    return (f"%{name} {100.0 * c.rate:.2f} [ {c.errors} / {c.ref_len}, {c.insertions} ins, "
            f"{c.deletions} del, {c.substitutions} sub ]")


def _by_count(counter: Counter) -> list[tuple[Any, int]]:
    """Most frequent first, ties in ascending order of the key (deterministic)."""
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))


def _table(rows: list[tuple[int, str]]) -> list[str]:
    """``count   text`` lines with the counts right-aligned in one column."""
    width = max((len(str(c)) for c, _ in rows), default=1)
    return [f"{c:>{width}}   {text}" for c, text in rows]


# --------------------------------------------------------------------------- files

def write_recogs(path: str | Path, utts: Iterable[Utterance]) -> None:
    """Write each utterance's reference and hypothesis words, sorted by utterance id::

        utt_id:\\tref=[w1, w2, ...]
        utt_id:\\thyp=[w1, w2, ...]

    Words never contain whitespace, so splitting the bracketed list on ``", "`` recovers
    them. Raises ``ValueError`` on a repeated utterance id.
    """
    lines: list[str] = []
    for utt_id, ref, hyp in _sorted_utts(utts):
        lines.append(f"{utt_id}:\tref=[{', '.join(ref.split())}]")
        lines.append(f"{utt_id}:\thyp=[{', '.join(hyp.split())}]")
    write_text(path, "".join(line + "\n" for line in lines))


def write_errs(path: str | Path, utts: Iterable[Utterance], setting: str) -> dict[str, Any]:
    """Write the detailed error analysis of one split decoded with ``setting``.

    Layout (sections separated by a blank line):

    * ``%WER 12.34 [ 56 / 454, 3 ins, 10 del, 43 sub ]`` and the same for ``%CER``
      (characters of the whitespace-collapsed text, spaces included), then the setting
      name and the number of utterances;
    * PER-UTTERANCE ALIGNMENTS, sorted by id: ``utt_id:\\t`` then the aligned words, a
      hit as the word, an error as ``(ref->hyp)``, a deletion ``(ref->*)``, an insertion
      ``(*->hyp)``;
    * SUBSTITUTIONS (``count   ref -> hyp``), DELETIONS (``count   word``) and
      INSERTIONS (``count   word``), most frequent first, ties alphabetical;
    * PER-WORD STATS: a ``word  correct  errors  in-ref  in-hyp`` table of every word seen,
      where *errors* counts each time the word is part of an error on either side
      (substituted, substituted in, deleted or inserted), most errors first, ties
      alphabetical.

    Returns the summary: ``setting``, ``utterances``, ``wer`` and ``cer`` (percent,
    equal to :func:`asrflow.scoring.metrics.corpus_rates`), ``words``, ``errors``, ``hits``,
    ``substitutions``, ``deletions``, ``insertions``, and for characters ``chars``,
    ``char_errors``, ``char_substitutions``, ``char_deletions``, ``char_insertions``.
    Raises ``ValueError`` on a repeated utterance id.
    """
    rows = _sorted_utts(utts)
    words, chars = ErrorCounts(), ErrorCounts()
    subs: Counter[tuple[str, str]] = Counter()
    dels: Counter[str] = Counter()
    inss: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    erroneous: Counter[str] = Counter()
    in_ref: Counter[str] = Counter()
    in_hyp: Counter[str] = Counter()
    align_lines: list[str] = []

    for utt_id, ref, hyp in rows:
        pairs = align(ref.split(), hyp.split())
        words = words + _counts(pairs)
        chars = chars + char_errors(ref, hyp)
        align_lines.append(f"{utt_id}:\t" + " ".join(_pair_text(p) for p in pairs))
        for r, h in pairs:
            if r is not None:
                in_ref[r] += 1
            if h is not None:
                in_hyp[h] += 1
            if r == h:
                correct[r] += 1  # type: ignore[index]  # a hit has both sides
                continue
            if r is None:
                inss[h] += 1  # type: ignore[index]
                erroneous[h] += 1  # type: ignore[index]
            elif h is None:
                dels[r] += 1
                erroneous[r] += 1
            else:
                subs[(r, h)] += 1
                erroneous[r] += 1
                erroneous[h] += 1

    out: list[str] = [_header("WER", words), _header("CER", chars),
                      f"setting: {setting}", f"utterances: {len(rows)}", ""]
    out.append("PER-UTTERANCE ALIGNMENTS: hits as words, errors as (ref->hyp), "
               f"{MISSING} for a deleted or inserted word")
    out += align_lines
    out.append("")
    out.append("SUBSTITUTIONS: count   ref -> hyp")
    out += _table([(c, f"{r} -> {h}") for (r, h), c in _by_count(subs)])
    out.append("")
    out.append("DELETIONS: count   ref word")
    out += _table([(c, w) for w, c in _by_count(dels)])
    out.append("")
    out.append("INSERTIONS: count   hyp word")
    out += _table([(c, w) for w, c in _by_count(inss)])
    out.append("")
    out.append("PER-WORD STATS: errors = times the word is substituted, substituted in, "
               "deleted or inserted")
    vocab = sorted(in_ref.keys() | in_hyp.keys(), key=lambda w: (-erroneous[w], w))
    table = [("word", "correct", "errors", "in-ref", "in-hyp")]
    table += [(w, str(correct[w]), str(erroneous[w]), str(in_ref[w]), str(in_hyp[w])) for w in vocab]
    widths = [max(len(row[k]) for row in table) for k in range(5)]
    out += [f"{row[0]:<{widths[0]}}" + "".join(f"  {x:>{wd}}" for x, wd in zip(row[1:], widths[1:]))
            for row in table]
    write_text(path, "".join(line + "\n" for line in out))

    return {
        "setting": setting, "utterances": len(rows),
        "wer": 100.0 * words.rate, "cer": 100.0 * chars.rate,
        "words": words.ref_len, "errors": words.errors, "hits": words.hits,
        "substitutions": words.substitutions, "deletions": words.deletions,
        "insertions": words.insertions,
        "chars": chars.ref_len, "char_errors": chars.errors,
        "char_substitutions": chars.substitutions, "char_deletions": chars.deletions,
        "char_insertions": chars.insertions,
    }


def write_wer_summary(path: str | Path, wers: dict[str, float]) -> None:
    """Write ``settings\\tWER`` then one ``name\\t12.34`` line per decoding setting, best
    (lowest WER) first, equal WERs by name; a NaN WER sorts last."""
    def key(item: tuple[str, float]) -> tuple[bool, float, str]:
        name, wer = item
        nan = math.isnan(wer)
        return nan, (0.0 if nan else wer), name

    lines = ["settings\tWER"] + [f"{name}\t{wer:.2f}" for name, wer in sorted(wers.items(), key=key)]
    write_text(path, "".join(line + "\n" for line in lines))


# --------------------------------------------------------------------------- tables

def top_errors(utts: Iterable[Utterance], n: int, chars: bool = False) -> list[tuple[str, int]]:
    """The ``n`` most frequent word errors over ``utts`` as ``(label, count)``; ``chars``:
    character errors over the characters CER counts (:func:`asrflow.scoring.metrics.char_errors`:
    whitespace collapsed; for Mandarin, whose transcripts have no word boundaries).

    Labels are ``ref -> hyp`` (substitution), ``ref -> *`` (deletion) and ``* -> hyp``
    (insertion); most frequent first, ties by label. ``n <= 0`` gives an empty list.
    """
    if n <= 0:
        return []
    units = (lambda t: list(" ".join(t.split()))) if chars else str.split
    counter: Counter[str] = Counter()
    for _, ref, hyp in utts:
        counter.update(_error_label(p) for p in align(units(ref), units(hyp)) if _is_error(p))
    return _by_count(counter)[:n]


def _edge_text(x: float, width: int = 1) -> str:
    """``x`` in seconds without trailing zeros, its whole part zero-padded to ``width`` digits
    (``2`` -> ``"02"``, ``2.5`` -> ``"02.5"``), so that labels sort as their numbers do."""
    whole, dot, frac = f"{x:f}".rstrip("0").partition(".")
    return whole.zfill(width) + (dot + frac if frac else "")


def wer_by_duration(durations: Sequence[float], refs: Sequence[str], hyps: Sequence[str],
                    edges: Sequence[float]) -> list[dict[str, Any]]:
    """Corpus WER of the utterances binned by duration (seconds).

    ``edges`` (strictly increasing) define the bins ``[e0, e1), [e1, e2), ...,
    [e_last, inf)``; an utterance exactly on an edge goes to the bin that starts there.
    Each bin gives ``bin`` (label such as ``"2-4 s"`` or ``"8+ s"``; whole seconds are
    zero-padded to the width of the last edge's, ``"02-04 s"`` ... ``"10+ s"``, so the labels
    sort in the bins' order, as tools that draw them as categories do), ``from_s`` (its
    lower edge), ``utterances``, ``words`` (reference words), ``errors`` (S+D+I) and ``wer``
    in percent. Every bin is
    returned, in order, even an empty one, whose ``wer`` is ``None`` (no data, as opposed
    to 0.0). A bin whose utterances all have empty references counts its errors over one
    word, as :class:`asrflow.scoring.metrics.ErrorCounts` does.

    Raises ``ValueError`` when the lengths differ, ``edges`` is empty or not strictly
    increasing, or a duration is NaN or below the first edge.
    """
    if not (len(durations) == len(refs) == len(hyps)):
        raise ValueError(f"{len(durations)} durations, {len(refs)} references, {len(hyps)} hypotheses")
    if not edges:
        raise ValueError("edges must not be empty")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges must be strictly increasing: {list(edges)}")
    totals = [ErrorCounts() for _ in edges]
    counts = [0] * len(edges)
    for d, r, h in zip(durations, refs, hyps):
        if math.isnan(d) or d < edges[0]:
            raise ValueError(f"duration {d} is outside the bins starting at {edges[0]}")
        k = bisect.bisect_right(edges, d) - 1
        totals[k] = totals[k] + word_errors(r, h)
        counts[k] += 1
    out: list[dict[str, Any]] = []
    width = len(str(int(edges[-1])))
    for k, lo in enumerate(edges):
        label = (f"{_edge_text(lo, width)}-{_edge_text(edges[k + 1], width)} s" if k + 1 < len(edges)
                 else f"{_edge_text(lo, width)}+ s")
        c = totals[k]
        out.append({"bin": label, "from_s": lo, "utterances": counts[k], "words": c.ref_len, "errors": c.errors,
                    "wer": 100.0 * c.rate if counts[k] else None})
    return out


# --------------------------------------------------------------------------- sclite

def trn_id(speaker: str, utt_id: str) -> str:
    """The utterance's id in a trn file: ``<speaker>-<utterance>`` (sclite's ``spu_id``), the
    utterance id itself when it already starts with its speaker (LibriSpeech's
    ``1089-134686-0000``)."""
    return utt_id if utt_id.startswith(f"{speaker}-") else f"{speaker}-{utt_id}"


def trn_speaker(trn_utt_id: str) -> str:
    """The speaker of a trn id: what precedes its first ``-`` (as sclite's ``spu_id`` reads it)."""
    return trn_utt_id.split("-", 1)[0]


def write_trn(path: str | Path, texts: Iterable[tuple[str, str]]) -> None:
    """Write ``(trn id, text)`` pairs as sclite trn lines, ``w1 w2 ... (id)``, sorted by id
    (an empty text gives ``(id)``). Raises ``ValueError`` on a repeated id, or on an id or a
    word sclite would misread (whitespace or parentheses in an id, parentheses in a word)."""
    rows = _sorted_utts((i, t, "") for i, t in texts)
    lines = []
    for utt_id, text, _ in rows:
        if not utt_id or any(c.isspace() or c in "()" for c in utt_id):
            raise ValueError(f"utterance id {utt_id!r} cannot be written to a trn file")
        if "(" in text or ")" in text:
            raise ValueError(f"the text of {utt_id!r} has parentheses, which trn files reserve for the id")
        lines.append(" ".join([*text.split(), f"({utt_id})"]))
    write_text(path, "".join(line + "\n" for line in lines))


def read_trn(path: str | Path) -> dict[str, str]:
    """A trn file as ``{id: text}`` (words joined by single spaces). Raises ``ValueError`` on a
    line without a trailing ``(id)`` or a repeated id."""
    out: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        words, _, rest = line.rpartition("(")
        if not rest.endswith(")") or not rest[:-1]:
            raise ValueError(f"{path}:{n}: no (utterance id) at the end of the line")
        if rest[:-1] in out:
            raise ValueError(f"{path}:{n}: utterance id {rest[:-1]!r} occurs more than once")
        out[rest[:-1]] = " ".join(words.split())
    return out


def speaker_errors(utts: Iterable[Utterance]) -> dict[str, tuple[int, ErrorCounts]]:
    """Per speaker (of each trn id, see :func:`trn_speaker`): utterances and summed word errors."""
    out: dict[str, tuple[int, ErrorCounts]] = {}
    for utt_id, ref, hyp in utts:
        n, c = out.get(trn_speaker(utt_id), (0, ErrorCounts()))
        out[trn_speaker(utt_id)] = (n + 1, c + word_errors(ref, hyp))
    return dict(sorted(out.items()))


def write_result(path: str | Path, utts: Iterable[Utterance], setting: str) -> dict[str, Any]:
    """Write an sclite-style result of one split decoded with ``setting``: the corpus
    ``%WER`` header (as the errs file's), then a table with one row per speaker and the
    corpus total (``Sum``): ``SPKR #Snt #Wrd #Sub #Del #Ins #Err WER%``, speakers sorted
    by id. ``utts`` carry trn ids (:func:`trn_id`). Returns the total as ``utterances``,
    ``words``, ``substitutions``, ``deletions``, ``insertions``, ``errors`` and ``wer``
    (percent, equal to :func:`asrflow.scoring.metrics.corpus_rates`)."""
    rows = _sorted_utts(utts)
    speakers = speaker_errors(rows)
    total = ErrorCounts()
    for _, c in speakers.values():
        total = total + c
    table = [("SPKR", "#Snt", "#Wrd", "#Sub", "#Del", "#Ins", "#Err", "WER%")]
    for name, (n, c) in [*speakers.items(), ("Sum", (len(rows), total))]:
        table.append((name, str(n), str(c.ref_len), str(c.substitutions), str(c.deletions), str(c.insertions),
                      str(c.errors), f"{100.0 * c.rate:.2f}"))
    widths = [max(len(row[k]) for row in table) for k in range(len(table[0]))]
    lines = [_header("WER", total), f"setting: {setting}", f"utterances: {len(rows)}", f"speakers: {len(speakers)}",
             "", *(f"{row[0]:<{widths[0]}}" + "".join(f"  {x:>{w}}" for x, w in zip(row[1:], widths[1:]))
                   for row in table)]
    write_text(path, "".join(line + "\n" for line in lines))
    return {"utterances": len(rows), "words": total.ref_len, "substitutions": total.substitutions,
            "deletions": total.deletions, "insertions": total.insertions, "errors": total.errors,
            "wer": 100.0 * total.rate}

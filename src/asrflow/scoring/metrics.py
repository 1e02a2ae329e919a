"""Word and character error rates (Levenshtein alignment with S/D/I counts, tie-broken as jiwer)."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from functools import lru_cache


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations aligning hypotheses to references, summed over utterances."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_len: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def hits(self) -> int:
        """Reference tokens aligned to an equal hypothesis token."""
        return self.ref_len - self.substitutions - self.deletions

    @property
    def rate(self) -> float:
        """errors / reference length (an empty reference with errors counts as 1 token)."""
        return self.errors / max(self.ref_len, 1) if self.errors else 0.0

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                           self.insertions + other.insertions, self.ref_len + other.ref_len)


# Operation codes of an edit script (one per aligned position).
HIT, SUB, DEL, INS = "=", "S", "D", "I"


def _edit_script(ref: Sequence, hyp: Sequence) -> tuple[int, int, list[str]]:
    """One minimum-edit alignment of ``hyp`` to ``ref``, chosen as rapidfuzz's
    ``Levenshtein.opcodes`` (and so ``jiwer.process_words``, jiwer 4) chooses it among
    equal-cost alignments.

    Returns ``(prefix, suffix, ops)``: the lengths of the common prefix and suffix (all
    hits, left out of the search as rapidfuzz does) and the operations aligning the
    middle parts, in *reverse* order.

    Method (Hyyrö's bit-parallel Levenshtein, as rapidfuzz's ``Levenshtein.editops``):
    the DP matrix D[i][j] (i over ref, j over hyp) is kept as one pair of bit vectors per
    hyp position, VP[j] bit i-1 set iff D[i][j] - D[i-1][j] == +1 and VN[j] bit i-1 iff
    it is -1. Tracing back from the end, at (i, j): a deletion if VP says it is optimal;
    otherwise an insertion if D[i][j-1] - D[i-1][j-1] == -1; otherwise the diagonal (a
    hit or a substitution). So deletions win every tie, and an insertion is taken before
    the diagonal only in that one case. Runs in O(len(hyp)) big-int operations plus an
    O(len(ref) + len(hyp)) trace, much faster in Python than an O(n*m) table.

    The cost (S+D+I) is always the minimum. The S/D/I split equals rapidfuzz's except when
    rapidfuzz switches to Hirschberg's divide-and-conquer, which it does only for huge
    inputs (roughly: both middle parts over ~2000 tokens and thousands of edits); there
    an equal-cost alignment with another split may be reported.
    """
    n, m = len(ref), len(hyp)
    prefix = 0
    stop = min(n, m)
    while prefix < stop and ref[prefix] == hyp[prefix]:
        prefix += 1
    suffix = 0
    stop -= prefix
    while suffix < stop and ref[n - 1 - suffix] == hyp[m - 1 - suffix]:
        suffix += 1
    a = ref[prefix:n - suffix]
    b = hyp[prefix:m - suffix]
    n, m = len(a), len(b)
    if not n or not m:
        return prefix, suffix, [DEL] * n + [INS] * m

    peq: dict = {}
    bit = 1
    for tok in a:
        peq[tok] = peq.get(tok, 0) | bit
        bit <<= 1
    full = bit - 1
    vp, vn = full, 0
    vps: list[int] = []
    vns: list[int] = []
    get = peq.get
    for tok in b:
        x = get(tok, 0)
        d0 = (((x & vp) + vp) ^ vp) | x | vn
        hp = vn | ~(d0 | vp)
        hn = d0 & vp
        hp = (hp << 1) | 1
        hn <<= 1
        vp = (hn | ~(d0 | hp)) & full
        vn = hp & d0 & full
        vps.append(vp)
        vns.append(vn)

    ops: list[str] = []
    add = ops.append
    i, j = n, m
    while i and j:
        if (vps[j - 1] >> (i - 1)) & 1:
            i -= 1
            add(DEL)
        else:
            j -= 1
            if j and (vns[j - 1] >> (i - 1)) & 1:
                add(INS)
            else:
                i -= 1
                add(HIT if a[i] == b[j] else SUB)
    if i:
        ops.extend([DEL] * i)
    if j:
        ops.extend([INS] * j)
    return prefix, suffix, ops


def align_counts(ref: Sequence, hyp: Sequence) -> ErrorCounts:
    """S/D/I counts of the minimum-edit alignment of ``hyp`` to ``ref``.

    Among equal-cost alignments the one rapidfuzz/jiwer report is used (see
    :func:`_edit_script`), so the counts equal ``jiwer.process_words`` exactly.
    """
    n = len(ref)
    if ref == hyp:
        return ErrorCounts(0, 0, 0, n)
    _, _, ops = _edit_script(ref, hyp)
    return ErrorCounts(ops.count(SUB), ops.count(DEL), ops.count(INS), n)


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str | None, str | None]]:
    """The alignment behind :func:`align_counts`, as (ref token, hyp token) pairs in order.

    A hit pairs equal tokens, a substitution two different ones, a deletion has ``None``
    on the hypothesis side and an insertion ``None`` on the reference side.
    """
    prefix, suffix, ops = _edit_script(ref, hyp)
    out: list[tuple[str | None, str | None]] = [(t, t) for t in ref[:prefix]]
    i = j = prefix
    for op in reversed(ops):
        if op == DEL:
            out.append((ref[i], None))
            i += 1
        elif op == INS:
            out.append((None, hyp[j]))
            j += 1
        else:
            out.append((ref[i], hyp[j]))
            i += 1
            j += 1
    out.extend((t, t) for t in ref[len(ref) - suffix:])
    return out


# A grid search scores the same (reference, hypothesis) pairs over and over (most
# utterances decode alike at neighbouring alpha/beta): remember the alignments.
@lru_cache(maxsize=1 << 16)
def word_errors(ref: str, hyp: str) -> ErrorCounts:
    return align_counts(ref.split(), hyp.split())


@lru_cache(maxsize=1 << 16)
def char_errors(ref: str, hyp: str) -> ErrorCounts:
    """Character errors over the text with whitespace collapsed (spaces count as characters)."""
    return align_counts(" ".join(ref.split()), " ".join(hyp.split()))


HEADLINE = {"en": "wer", "zh": "cer"}  # the error rate a language is tuned and reported by (both are computed)


def headline(language: str) -> str:
    """``wer`` for a language written with spaces between words, ``cer`` for Mandarin, whose
    transcripts are characters without word boundaries (its WER is over space-separated
    tokens, so it counts whole sentences)."""
    return HEADLINE[language]


def best_point(rows: Sequence[dict[str, float]], metric: str = "wer") -> dict[str, float]:
    """The best row of an alpha/beta grid: lowest ``metric`` (WER or CER), ties broken by the
    other, then smaller alpha, then smaller beta (deterministic)."""
    other = "cer" if metric == "wer" else "wer"
    return min(rows, key=lambda r: (r[metric], r[other], r["alpha"], r["beta"]))


def corpus_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Corpus WER and CER in percent, plus the S/D/I word counts."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    w, c = ErrorCounts(), ErrorCounts()
    for r, h in zip(refs, hyps):
        w = w + word_errors(r, h)
        c = c + char_errors(r, h)
    return {"wer": 100.0 * w.rate, "cer": 100.0 * c.rate, "words": w.ref_len,
            "substitutions": w.substitutions, "deletions": w.deletions, "insertions": w.insertions}


def grid_edges(grid: list[dict[str, float]], best: dict[str, float]) -> list[str]:
    """Where ``best`` sits on the edge of ``grid`` (e.g. ``"beta = 2.5, the grid's maximum"``):
    the true best may lie outside the searched range, so the range should be widened."""
    out = []
    for key in ("alpha", "beta"):
        values = sorted({row[key] for row in grid})
        if len(values) < 2:
            continue
        if best[key] == values[0]:
            out.append(f"{key} = {best[key]}, the grid's minimum")
        elif best[key] == values[-1]:
            out.append(f"{key} = {best[key]}, the grid's maximum")
    return out

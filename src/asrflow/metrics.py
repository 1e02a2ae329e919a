"""Word and character error rates (Levenshtein alignment with S/D/I counts)."""

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
    def rate(self) -> float:
        """errors / reference length (an empty reference with errors counts as 1 token)."""
        return self.errors / max(self.ref_len, 1) if self.errors else 0.0

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                           self.insertions + other.insertions, self.ref_len + other.ref_len)


def align_counts(ref: Sequence, hyp: Sequence) -> ErrorCounts:
    """Minimum-edit alignment of ``hyp`` to ``ref``; ties prefer substitutions (as jiwer)."""
    n, m = len(ref), len(hyp)
    if ref == hyp:
        return ErrorCounts(0, 0, 0, n)
    # dp[j] = (cost, S, D, I) for ref[:i] vs hyp[:j]
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, m + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                c, s, d, ins = prev[j - 1]
                best = (c + 1, s + 1, d, ins)
            c, s, d, ins = prev[j]
            if c + 1 < best[0]:
                best = (c + 1, s, d + 1, ins)
            c, s, d, ins = cur[j - 1]
            if c + 1 < best[0]:
                best = (c + 1, s, d, ins + 1)
            cur.append(best)
        prev = cur
    _, s, d, ins = prev[m]
    return ErrorCounts(s, d, ins, n)


# A grid search scores the same (reference, hypothesis) pairs over and over (most
# utterances decode alike at neighbouring alpha/beta): remember the alignments.
@lru_cache(maxsize=1 << 16)
def word_errors(ref: str, hyp: str) -> ErrorCounts:
    return align_counts(ref.split(), hyp.split())


@lru_cache(maxsize=1 << 16)
def char_errors(ref: str, hyp: str) -> ErrorCounts:
    """Character errors over the text with whitespace collapsed (spaces count as characters)."""
    return align_counts(" ".join(ref.split()), " ".join(hyp.split()))


def best_point(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The best row of an alpha/beta grid: lowest WER, ties broken by CER, then smaller
    alpha, then smaller beta (deterministic)."""
    return min(rows, key=lambda r: (r["wer"], r["cer"], r["alpha"], r["beta"]))


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

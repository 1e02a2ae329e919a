"""Frame arithmetic shared by the model and the manifest stage (no torch import here, so the
manifest's worker processes stay small)."""

from __future__ import annotations


def conv_output_length(frames, kernel_t: int, time_strides: list[int]):
    """Frames left after the conv front end (int or tensor): the one formula the model and
    the manifest's too-short-for-label check share."""
    for st in time_strides:
        frames = (frames + 2 * (kernel_t // 2) - kernel_t) // st + 1
    return frames


def ctc_min_frames(text: str) -> int:
    """Frames CTC needs for ``text``: one per character plus a blank between repeats."""
    return len(text) + sum(1 for a, b in zip(text, text[1:]) if a == b)

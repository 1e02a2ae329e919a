"""Each model family's output frame rate: the kernel and time strides of the layers that
shorten time, read from its params block's ``subsampling`` (every family has one). No torch
import: the manifest stage's too-short-for-label check uses it, and its workers stay small.
The networks compute their output lengths with the same arithmetic
(:func:`asrflow.features.geometry.conv_output_length`); a test holds each to it.
"""

from __future__ import annotations

import math
from typing import Any, Callable


def _deepspeech2(sub: dict[str, Any]) -> tuple[int, list[int]]:
    return sub["kernel"][1], [t for _, t in sub["strides"]]       # 2-D convs: (freq, time)


def _jasper(sub: dict[str, Any]) -> tuple[int, list[int]]:
    return sub["kernel"], [sub["stride"]]                         # the prolog conv


def _conformer(factor: int) -> tuple[int, list[int]]:
    return 3, [2] * int(math.log2(factor))                        # stride-2 3x3 convs


GEOMETRY: dict[str, Callable[[Any], tuple[int, list[int]]]] = {
    "deepspeech2": _deepspeech2, "jasper": _jasper, "quartznet": _jasper, "conformer": _conformer}


def frame_geometry(model: dict[str, Any]) -> tuple[int, list[int]]:
    """(kernel, time strides) of the chosen family's time-shortening layers, from params.yaml's
    ``model`` block: reads ``model.family`` and ``model.<family>.subsampling`` only."""
    return GEOMETRY[model["family"]](model[model["family"]]["subsampling"])

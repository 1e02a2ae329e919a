"""The embedded corpora, generated here by espeak-ng in LibriSpeech's layout (``synth``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from asrflow.data.sources.librispeech import list_split, open_source

__all__ = ["fetch", "open_source", "list_split"]


def fetch(entry: dict[str, Any], subsets: list[str], out_dir: Path, store: Path, *, seed: int, sample_rate: int,
          log: Callable[[str], None]) -> dict[str, Any]:
    from asrflow.data.synth import generate_corpus

    def progress(done: int, total: int) -> None:
        if done % 500 == 0 or done == total:
            log(f"synthesised {done}/{total}")
    return generate_corpus(entry, seed, out_dir, sample_rate=sample_rate, workers=entry["workers"], progress=progress)

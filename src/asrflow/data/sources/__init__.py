"""Dataset sources: how a corpus that params.yaml names reaches the manifest stage.

A dataset entry (``datasets.<name>``) names its ``source``; the source is the only code
that knows the corpus's layout. It has one half per stage:

- ``fetch(entry, subsets, out_dir, store, ...)`` (download stage): the stage's product, a
  directory of verified archives plus ``checksums.json`` (LibriSpeech, AISHELL-1, the
  embedded corpora, a Common Voice archive), or ``source.json`` recording where a corpus
  the user already has lies, how to read it, and a fingerprint of its file listing;
- ``open(archive_dir, raw_dir, max_gb, log)`` then ``list_split(root, split, subsets)``
  (manifest stage): extract what needs extracting, then list a split's utterances as
  :class:`Utterance` rows (audio, raw transcript, speaker, optional segment) plus the
  rejects the layout alone can tell (a transcript line with no audio, a path outside the
  corpus, a shell pipeline not allowed). Everything else (text normalisation by language,
  headers, sample rates, durations, label lengths, duplicate ids) is checked once for
  every source in :mod:`asrflow.data.manifest`.

The invariant every lister keeps: each input it saw (an audio file, a list line) is named
in ``inputs`` by a key, and ends as exactly one manifest row or one reject with that key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Utterance:
    """One listed utterance, before the shared checks."""

    utt_id: str
    text: str                      # as the corpus has it; normalised by language later
    audio: str                     # path of the audio file
    subset: str
    key: str                       # the input it came from (a file, or 'list:line'), for the invariant
    speaker: str = ""              # '' when the corpus does not say
    chapter: str = ""
    offset: float = 0.0            # seconds into the file (Kaldi segments, NeMo offset)
    duration: float | None = None  # a segment's length; None: to the end of the file
    where: str = ""                # where it was listed ('text:12'), for reject details
    weight: float = 1.0            # times per epoch training sees it (a combined dataset's part weight)


@dataclass
class Listing:
    """A split as a source lists it: utterances, rejects (dicts with ``split, subset, utt_id,
    path, reason, detail`` and the input's ``key``) and every input key seen."""

    utterances: list[Utterance] = field(default_factory=list)
    rejects: list[dict[str, str]] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    def reject(self, split: str, subset: str, utt_id: str, path: str, reason: str, detail: str,
               key: str | None = None) -> None:
        self.rejects.append({"split": split, "subset": subset, "utt_id": utt_id, "path": path, "reason": reason,
                             "detail": detail, "key": key or path})


@dataclass(frozen=True)
class Source:
    """A reader of one kind of corpus; its code is imported when used."""

    name: str
    module: Callable[[], Any]  # imports the source's module when first used
    summary: str

    def _mod(self):
        return self.module()

    def fetch(self, entry: dict[str, Any], subsets: list[str], out_dir: Path, store: Path, *, seed: int,
              sample_rate: int, log: Callable[[str], None]) -> dict[str, Any]:
        return self._mod().fetch(entry, subsets, Path(out_dir), Path(store), seed=seed, sample_rate=sample_rate,
                                 log=log)

    def open(self, archive_dir: Path, raw_dir: Path, max_gb: float, log: Callable[[str], None]):
        """What ``list_split`` reads, once archives are extracted: a root directory and options."""
        return self._mod().open_source(Path(archive_dir), Path(raw_dir), max_gb, log)

    def lister(self, opened) -> Callable[[Path, str, list[str]], Listing]:
        mod = self._mod()
        return lambda raw_dir, split, subsets: mod.list_split(opened, split, subsets)


# Imported inside functions, so a stage loads only the source it reads, while the pipeline's
# code lineage (asrflow.pipeline.definition.code_deps) still sees every source module.
def _embedded():
    from asrflow.data.sources import embedded
    return embedded


def _librispeech():
    from asrflow.data.sources import librispeech
    return librispeech


def _aishell():
    from asrflow.data.sources import aishell
    return aishell


def _common_voice():
    from asrflow.data.sources import common_voice
    return common_voice


def _local():
    from asrflow.data.sources import local
    return local


def _combine():
    from asrflow.data.sources import combine
    return combine


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("synth", _embedded, "the embedded corpora spoken by espeak-ng (English; Mandarin with language: zh)"),
    Source("librispeech", _librispeech, "LibriSpeech from OpenSLR mirrors (resource 12)"),
    Source("aishell", _aishell, "AISHELL-1 from OpenSLR mirrors (resource 33), Mandarin"),
    Source("common_voice", _common_voice, "a Common Voice release (archive or folder) you have"),
    Source("kaldi", _local, "a Kaldi data directory per subset: wav.scp, text, utt2spk, segments"),
    Source("nemo", _local, "NeMo JSON-lines manifests: audio_filepath, duration, text, offset"),
    Source("folder", _local, "a folder of audio plus <subset>.tsv/.csv of path and text"),
    Source("combine", _combine, "several of the above as one dataset, each part with a training weight"),
]}


def source_of(entry: dict[str, Any]) -> Source:
    """The :class:`Source` a ``datasets.<name>`` entry names (the schema admits only these)."""
    return SOURCES[entry["source"]]

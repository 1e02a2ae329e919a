"""The embedded corpora: LibriSpeech-layout corpora spoken by espeak-ng, English (``synth``)
or Mandarin (a ``synth`` source with ``language: zh``, shipped as ``synth_zh``: the cmn voice,
sentences from :mod:`asrflow.data.synth_text_zh`).

Speakers are espeak-ng ``voice+variant`` pairs. Whole speakers are held out for dev and
test, and sentences are disjoint across train/dev/test/LM text, so the test split
measures recognition of unseen voices saying unseen sentences.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asrflow.data.archives import gzip_text, hash_file, pack_tree, write_checksums
from asrflow.data import synth_text, synth_text_zh

TEXT = {"en": synth_text, "zh": synth_text_zh}  # the sentence generator by the dataset's language


@dataclass(frozen=True)
class Speaker:
    speaker_id: int
    voice: str
    variant: str
    subset: str


@dataclass(frozen=True)
class Utterance:
    speaker: Speaker
    subset: str
    chapter: int
    index: int
    text: str
    rate: int
    pitch: int

    @property
    def utt_id(self) -> str:
        return f"{self.speaker.speaker_id}-{self.chapter}-{self.index:04d}"


def assign_speakers(cfg: dict[str, Any], seed: int) -> list[Speaker]:
    """Split the voice x variant pool into train/dev/test speakers (seeded, whole speakers)."""
    pool = [(v, var) for v in cfg["voices"] for var in cfg["variants"]]
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    n_dev, n_test = cfg["dev_speakers"], cfg["test_speakers"]
    subset_of = {}
    for rank, i in enumerate(order):
        subset_of[i] = "dev" if rank < n_dev else "test" if rank < n_dev + n_test else "train"
    return [Speaker(1000 + i, v, var, subset_of[i]) for i, (v, var) in enumerate(pool)]


def plan_corpus(cfg: dict[str, Any], seed: int) -> tuple[list[Utterance], list[str]]:
    """Every utterance to synthesise and the LM text, deterministic for (cfg, seed)."""
    sizes = {name: int(n) for name, n in cfg["utterances"].items()}
    sizes["lm"] = int(cfg["lm_sentences"])
    # dev and test hold words no training transcript, LM text or lexicon has, as real speech does
    text = TEXT[cfg["language"]]
    weights = {"zipf": cfg["word_zipf"]} if "word_zipf" in cfg else {}  # the Mandarin generator's (config checks)
    held = text.held_out_words(cfg["oov_fraction"], seed, **weights)
    sentences = text.generate_splits(sizes, seed, held_out=held, oov_splits=("dev", "test"), **weights)
    speakers = assign_speakers(cfg, seed)
    rng = random.Random(seed + 1)
    utts: list[Utterance] = []
    for subset in cfg["utterances"]:
        spk = [s for s in speakers if s.subset == subset] or [s for s in speakers if s.subset == "train"]
        counters = {s.speaker_id: 0 for s in spk}
        for k, text in enumerate(sentences[subset]):
            s = spk[k % len(spk)]
            chapter = 1 + list(cfg["utterances"]).index(subset)
            utts.append(Utterance(s, subset, chapter, counters[s.speaker_id], text,
                                  rng.randint(*map(int, cfg["rate"])), rng.randint(*map(int, cfg["pitch"]))))
            counters[s.speaker_id] += 1
    return utts, sentences["lm"]


def synthesize(utt: Utterance, out_path: Path, sample_rate: int = 16000) -> None:
    """Speak one utterance to a 16-bit mono FLAC at ``sample_rate`` (espeak-ng | sox).

    Raises RuntimeError with espeak-ng's or sox's message if either fails.
    """
    espeak = subprocess.run(
        ["espeak-ng", "-v", f"{utt.speaker.voice}+{utt.speaker.variant}", "-s", str(utt.rate),
         "-p", str(utt.pitch), "--stdout", utt.text], capture_output=True, check=False)
    if espeak.returncode != 0 or not espeak.stdout:
        raise RuntimeError(f"espeak-ng failed for {utt.utt_id}: {espeak.stderr.decode(errors='replace').strip()}")
    sox = subprocess.run(
        # -R: repeatable mode (fixed dither seed), so the corpus is byte-identical run to run.
        ["sox", "-R", "-t", "wav", "-", "-r", str(sample_rate), "-c", "1", "-b", "16", str(out_path), "gain", "-n", "-1"],
        input=espeak.stdout, capture_output=True, check=False)
    if sox.returncode != 0:
        raise RuntimeError(f"sox failed for {utt.utt_id}: {sox.stderr.decode(errors='replace').strip()}")


def _synth_job(args: tuple[Utterance, str, int]) -> str:
    utt, path, sr = args
    synthesize(utt, Path(path), sr)
    return utt.utt_id


def generate_corpus(cfg: dict[str, Any], seed: int, out_dir: str | Path, sample_rate: int = 16000,
                    workers: int = 0, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the synth corpus to ``out_dir`` as LibriSpeech-shaped archives.

    ``out_dir/<subset>.tar.gz`` holds ``LibriSpeech/<subset>/<speaker>/<chapter>/`` with one
    16 kHz FLAC per utterance and a ``<speaker>-<chapter>.trans.txt`` per chapter (upper
    case, as LibriSpeech), plus ``LibriSpeech/SPEAKERS.tsv``; ``out_dir/lm-corpus.txt.gz``
    holds the LM sentences and ``out_dir/checksums.json`` the SHA-256 of each file. The
    archives are byte-reproducible for (cfg, seed). Everything is built in temporary
    siblings and renamed into place, so an interrupted run leaves nothing at ``out_dir``.
    Returns summary counts.
    """
    out_dir = Path(out_dir)
    utts, lm_text = plan_corpus(cfg, seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tree = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tree-", dir=out_dir.parent))
    packed = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        root = tree / "LibriSpeech"
        jobs = []
        by_chapter: dict[Path, list[Utterance]] = {}
        for u in utts:
            d = root / u.subset / str(u.speaker.speaker_id) / str(u.chapter)
            d.mkdir(parents=True, exist_ok=True)
            jobs.append((u, str(d / f"{u.utt_id}.flac"), sample_rate))
            by_chapter.setdefault(d, []).append(u)
        for d, chapter_utts in by_chapter.items():
            u0 = chapter_utts[0]
            (d / f"{u0.speaker.speaker_id}-{u0.chapter}.trans.txt").write_text(
                "".join(f"{u.utt_id} {u.text.upper()}\n" for u in chapter_utts), encoding="utf-8")
        workers = workers or os.cpu_count() or 1
        done = 0
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_synth_job, jobs, chunksize=16):
                done += 1
                if progress:
                    progress(done, len(jobs))
        speakers = sorted({u.speaker for u in utts}, key=lambda s: s.speaker_id)
        (root / "SPEAKERS.tsv").write_text(
            "speaker\tvoice\tvariant\tsubset\n"
            + "".join(f"{s.speaker_id}\t{s.voice}\t{s.variant}\t{s.subset}\n" for s in speakers), encoding="utf-8")
        sums = {}
        for subset in cfg["utterances"]:
            name = f"{subset}.tar.gz"
            members = [root, root / "SPEAKERS.tsv", *(root / subset).rglob("*"), root / subset]
            pack_tree(tree, members, packed / name)
            sums[name] = hash_file(packed / name, ["sha256"])
        gzip_text(lm_text, packed / "lm-corpus.txt.gz")
        sums["lm-corpus.txt.gz"] = hash_file(packed / "lm-corpus.txt.gz", ["sha256"])
        write_checksums(packed, sums)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(packed, out_dir)
    except BaseException:
        shutil.rmtree(packed, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    counts = {f"utterances_{k}": sum(1 for u in utts if u.subset == k) for k in cfg["utterances"]}
    counts.update({f"speakers_{k}": len({u.speaker.speaker_id for u in utts if u.subset == k})
                   for k in cfg["utterances"]})
    counts["lm_sentences"] = len(lm_text)
    counts["archive_bytes"] = sum((out_dir / n).stat().st_size for n in sums)
    return counts

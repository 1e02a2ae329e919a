"""KenLM n-gram language models: text normalisation, lmplz, build_binary, lexicon, perplexity.

Text is streamed through temporary files, so the LibriSpeech LM corpus (40 M sentences,
800 M words) never sits in memory; only the word counts do.

Outputs of :func:`build_lm` in the LM directory:

- ``lm.arpa``, ``lm.bin`` and ``lexicon.txt``: the word n-gram and its spelling lexicon
  (flashlight format) for lexicon-constrained beam search;
- ``char.arpa``, ``char.bin`` when ``char_order`` > 0: a character n-gram over the
  acoustic model's tokens (``|`` between words) for lexicon-free beam search. A subword
  model (``vocab.units: bpe``) gets a lexicon spelled in its pieces and no character LM.

A character language (``zh``) has no word boundaries to learn: its "words" are its
characters. The LM text is normalised as its transcripts are (:func:`asrflow.text.normalize.
normalize_zh`), each character is an LM token, the n-gram's order is ``char_order``, the
lexicon spells each character as itself with no separator after it, and the character LM is
that same model, which is what a zh dataset decodes with (lexicon-free: the tune stage).
"""

from __future__ import annotations

import gzip
import heapq
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from asrflow.text.normalize import normalize_zh
from asrflow.text.vocab import SPACE, normalize

# Stand-in for words outside the top-K while lmplz counts (lmplz refuses a literal <unk>
# in its input). Upper case cannot occur in normalised text. The ARPA's unigram for it
# replaces lmplz's own <unk>, so the model has a real open-vocabulary <unk> with contexts.
UNK = "<unk>"
_UNK_STANDIN = "UNKNOWNWORD"


class LMError(RuntimeError):
    """lmplz/build_binary failed; the message says which setting to change."""


@dataclass(frozen=True)
class LMConfig:
    """The ``lm`` block of params.yaml."""

    order: int
    sources: tuple[str, ...]
    top_k: int                                     # keep the K most frequent words; 0 = all
    prune: tuple[int, ...]                         # lmplz --prune thresholds per order
    memory: str                                    # lmplz -S
    tmp_dir: str | None                            # lmplz -T; None = the system's temp dir
    binary_type: str                               # build_binary: probing or trie
    quantize: dict[str, int] | None                # trie only: pointer_bits/prob_bits/backoff_bits
    char_order: int                                # character n-gram for lexicon-free decoding; 0 = none

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> "LMConfig":
        return cls(order=p["order"], sources=tuple(p["sources"]), top_k=p["top_k"], prune=tuple(p["prune"] or ()),
                   memory=p["memory"], tmp_dir=p["tmp_dir"], binary_type=p["binary_type"], quantize=p["quantize"],
                   char_order=p["char_order"])


# ------------------------------------------------------------------------------- text

def corpus_lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield from f


@dataclass
class TextStats:
    lines_in: int = 0
    sentences: int = 0
    words: int = 0
    chars_removed: int = 0
    lines_changed: int = 0
    counts: Counter = field(default_factory=Counter)


def normalize_line(line: str, alphabet: set[str], language: str = "en") -> tuple[str, int]:
    """The seeds' normalisation: lower case, characters outside ``alphabet`` removed,
    whitespace collapsed. Returns the text and how many characters were removed. For ``zh``
    the transcripts' rule, then the characters as space-separated LM tokens."""
    if language == "zh":
        t = normalize_zh(line)
        kept = [c for c in t if c in alphabet]
        return " ".join(kept), len(t) - len(kept)
    t = normalize(line)
    if all(c in alphabet or c == " " for c in t):
        return t, 0
    kept = "".join(c for c in t if c in alphabet or c == " ")
    return normalize(kept), len(t) - len(kept)


def write_normalized(lines: Iterable[str], alphabet: set[str], out: IO[str], language: str = "en") -> TextStats:
    """Normalise ``lines`` into ``out`` (one sentence per line, empty ones dropped), counting words."""
    st = TextStats()
    for line in lines:
        st.lines_in += 1
        t, removed = normalize_line(line, alphabet, language)
        if removed:
            st.chars_removed += removed
            st.lines_changed += 1
        if not t:
            continue
        words = t.split()
        st.counts.update(words)
        st.sentences += 1
        st.words += len(words)
        out.write(t + "\n")
    return st


def top_words(counts: Counter, k: int) -> set[str]:
    """The ``k`` most frequent words (ties broken alphabetically, so the result is reproducible)."""
    if not k or k >= len(counts):
        return set(counts)
    return {w for _, w in heapq.nsmallest(k, ((-n, w) for w, n in counts.items()))}


def _map_oov(src: Path, dst: Path, keep: set[str]) -> int:
    """Copy ``src`` to ``dst`` with words outside ``keep`` replaced by the <unk> stand-in."""
    mapped = 0
    with open(src, encoding="utf-8") as fi, open(dst, "w", encoding="utf-8") as fo:
        for line in fi:
            words = line.split()
            mapped += sum(1 for w in words if w not in keep)
            fo.write(" ".join(w if w in keep else _UNK_STANDIN for w in words) + "\n")
    return mapped


def char_sentence(sentence: str) -> str:
    """A sentence as the acoustic model's tokens: ``the cat`` -> ``t h e | c a t``."""
    return " ".join(SPACE if c == " " else c for c in sentence)


# ---------------------------------------------------------------------------- KenLM tools

def _hint(err: str, rc: int, cfg: LMConfig, what: str) -> str:
    if rc == -signal.SIGKILL:
        return (f" (killed by SIGKILL, most likely the out-of-memory killer: lower 'lm.memory' in params.yaml, "
                f"now {cfg.memory!r})")
    if "Cannot allocate memory" in err or "std::bad_alloc" in err or "MallocException" in err:
        return (f" (out of memory: {what} could not allocate what 'lm.memory' asks for ({cfg.memory!r}); "
                "lower it in params.yaml, e.g. 20% or 4G)")
    if "No space left on device" in err or "Disk quota exceeded" in err:
        return (" (out of disk: lmplz writes its sort files to 'lm.tmp_dir' "
                f"({cfg.tmp_dir or tempfile.gettempdir()!r}) and the model to the LM directory; free space there "
                "or point 'lm.tmp_dir' in params.yaml at a bigger disk)")
    if "MakeTemp" in err or "making a temporary" in err:
        return f" (cannot create temporary files in 'lm.tmp_dir' = {cfg.tmp_dir!r}: does it exist and is it writable?)"
    return ""


def _run(cmd: list[str], what: str, cfg: LMConfig, stdin: Any = None) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise LMError(f"{cmd[0]} not found on PATH: run `make install` (it builds KenLM into .tools/kenlm/bin)")
    proc = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        raise LMError(f"{what} failed with exit {proc.returncode}{_hint(err, proc.returncode, cfg, what)}:\n"
                      f"{err[-2000:]}")
    return proc


def run_lmplz(text_path: Path, arpa_path: Path, order: int, cfg: LMConfig) -> bool:
    """``lmplz`` over ``text_path`` into ``arpa_path``; returns whether ``--discount_fallback``
    was needed (added only when lmplz rejects the corpus's count statistics)."""
    base = ["lmplz", "-o", str(order), "-S", cfg.memory, "--arpa", str(arpa_path)]
    if cfg.prune:
        base += ["--prune", *(str(x) for x in cfg.prune)]
    if cfg.tmp_dir:
        base += ["-T", str(Path(cfg.tmp_dir) / "lmplz-")]
    try:
        with open(text_path, encoding="utf-8") as f:
            _run(base, "lmplz", cfg, stdin=f)
        return False
    except LMError as e:
        if "discount_fallback" not in str(e):
            raise
    with open(text_path, encoding="utf-8") as f:
        _run(base + ["--discount_fallback"], "lmplz --discount_fallback", cfg, stdin=f)
    return True


def build_binary(arpa: Path, binary: Path, cfg: LMConfig) -> None:
    """``build_binary`` to probing or trie (with the seeds' ``-a/-q/-b`` quantisation if set)."""
    cmd = ["build_binary", "-s"]
    if cfg.binary_type == "trie" and cfg.quantize:
        q = cfg.quantize
        cmd += ["-a", str(q["pointer_bits"]), "-q", str(q["prob_bits"]), "-b", str(q["backoff_bits"])]
    _run(cmd + [cfg.binary_type, str(arpa), str(binary)], "build_binary", cfg)


def _install_unk(arpa: Path) -> None:
    """Rename the top-K stand-in to <unk> in the ARPA, replacing lmplz's context-free <unk>."""
    tmp = arpa.with_name(arpa.name + ".unk")
    with open(arpa, encoding="utf-8") as fi, open(tmp, "w", encoding="utf-8") as fo:
        section = None
        for line in fi:
            if line.startswith("\\"):
                section = line.strip()
            elif section == "\\data\\" and line.startswith("ngram 1="):
                line = f"ngram 1={int(line.split('=')[1]) - 1}\n"
            elif section == "\\1-grams:" and line.split("\t")[1:2] == [UNK]:
                continue
            if _UNK_STANDIN in line:
                line = "\t".join(UNK if f == _UNK_STANDIN else " ".join(UNK if w == _UNK_STANDIN else w
                                                                         for w in f.split(" "))
                                 for f in line.rstrip("\n").split("\t")) + "\n"
            fo.write(line)
    os.replace(tmp, arpa)


def _arpa_counts(arpa: Path) -> dict[int, int]:
    counts = {}
    with open(arpa, encoding="utf-8") as f:
        for line in f:
            if line.startswith("ngram "):
                n, c = line[6:].split("=")
                counts[int(n)] = int(c)
            elif line.startswith("\\1-grams:"):
                break
    return counts


def _build_one(text: Path, out_dir: Path, name: str, order: int, cfg: LMConfig) -> dict[str, Any]:
    """lmplz + build_binary into ``<name>.arpa``/``<name>.bin``; partial files never keep final names."""
    arpa, binary = out_dir / f"{name}.arpa", out_dir / f"{name}.bin"
    part_arpa, part_bin = out_dir / f".{name}.arpa.part", out_dir / f".{name}.bin.part"
    try:
        t0 = time.perf_counter()
        fallback = run_lmplz(text, part_arpa, order, cfg)
        if name == "lm" and cfg.top_k:
            _install_unk(part_arpa)
        t1 = time.perf_counter()
        build_binary(part_arpa, part_bin, cfg)
        os.replace(part_arpa, arpa)
        os.replace(part_bin, binary)
    finally:
        part_arpa.unlink(missing_ok=True)
        part_bin.unlink(missing_ok=True)
    counts = _arpa_counts(arpa)
    return {"order": order, "discount_fallback": int(fallback), "ngrams": sum(counts.values()),
            **{f"{n}grams": c for n, c in sorted(counts.items())},
            "arpa_mb": round(arpa.stat().st_size / 1e6, 3), "binary_mb": round(binary.stat().st_size / 1e6, 3),
            "lmplz_seconds": round(t1 - t0, 2), "build_binary_seconds": round(time.perf_counter() - t1, 2)}


def build_lm(lines: Iterable[str], alphabet: set[str], out_dir: str | Path, cfg: LMConfig,
             language: str = "en", spell: Callable[[str], list[str]] | None = None) -> dict[str, Any]:
    """Normalise ``lines`` and build the word LM (and the character LM if ``cfg.char_order``).

    Returns metrics: text statistics, vocabulary kept and words mapped to <unk>, n-gram
    counts, sizes on disk and timings, the character LM's under ``char_``. For ``zh`` the
    words are characters (see the module's docstring). ``spell`` spells a lexicon word in
    the acoustic model's tokens (default: its characters, then ``|``); a subword model's
    (:meth:`Tokenizer.spell`) gets no character LM, whose tokens would not be its own.
    """
    if spell is not None and cfg.char_order:
        cfg = replace(cfg, char_order=0)
    chars_are_words = language == "zh"
    if chars_are_words and not cfg.char_order:
        raise LMError("params.yaml: 'lm.char_order' is 0, but a zh dataset's n-gram is over characters: set it "
                      "(e.g. 6)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.tmp_dir and not Path(cfg.tmp_dir).is_dir():
        raise LMError(f"params.yaml: 'lm.tmp_dir' = {cfg.tmp_dir!r} is not a directory")
    with tempfile.TemporaryDirectory(prefix="asrflow-lm-", dir=cfg.tmp_dir) as tmp:
        text = Path(tmp) / "text.txt"
        with open(text, "w", encoding="utf-8") as f:
            st = write_normalized(lines, alphabet, f, language)
        if not st.sentences:
            raise LMError(f"no LM text left after normalisation ({st.lines_in} lines read, "
                          f"{st.chars_removed} characters outside the vocabulary removed)")
        keep = top_words(st.counts, cfg.top_k)
        unk_tokens = 0
        if cfg.top_k:
            mapped = Path(tmp) / "text.topk.txt"
            unk_tokens = _map_oov(text, mapped, keep)
            text = mapped
        metrics: dict[str, Any] = {
            "lines": st.lines_in, "sentences": st.sentences, "words": st.words, "distinct_words": len(st.counts),
            "vocabulary": len(keep), "unk_tokens": unk_tokens, "chars_removed": st.chars_removed,
            "lines_changed": st.lines_changed}
        metrics.update(_build_one(text, out_dir, "lm", cfg.char_order if chars_are_words else cfg.order, cfg))
        if chars_are_words:  # the character LM is the same model
            for ext in ("arpa", "bin"):
                shutil.copyfile(out_dir / f"lm.{ext}", out_dir / f"char.{ext}")
            metrics.update({f"char_{k}": v for k, v in metrics.items() if k in ("order", "ngrams", "arpa_mb",
                                                                                 "binary_mb")})
        elif cfg.char_order:
            chars = Path(tmp) / "chars.txt"
            with open(Path(tmp) / "text.txt", encoding="utf-8") as fi, open(chars, "w", encoding="utf-8") as fo:
                for line in fi:
                    fo.write(char_sentence(line.rstrip("\n")) + "\n")
            metrics.update({f"char_{k}": v for k, v in _build_one(chars, out_dir, "char", cfg.char_order, cfg).items()})
    if spell is None:
        spell = list if chars_are_words else (lambda w: [*w, SPACE])
    write_lexicon(sorted(keep), out_dir / "lexicon.txt", spell)
    return metrics


def write_lexicon(words: Iterable[str], path: Path, spell: Callable[[str], list[str]]) -> None:
    """flashlight lexicon: ``word<TAB>t o k e n s`` per line, spelled by ``spell``: a
    character model's ``c h a r s |`` (no ``|`` when words are not separated, as characters
    of a character language are not), a subword model's pieces."""
    with open(path, "w", encoding="utf-8") as f:
        for w in words:
            f.write(f"{w}\t{' '.join(spell(w))}\n")


def perplexity(model_path: str | Path, sentences: Iterable[str], chars: bool = False) -> dict[str, float]:
    """Corpus perplexity of a KenLM model (kenlm Python module) over normalised sentences.

    ``10 ** (-total log10 probability / predicted tokens)``, with ``</s>`` counted as a
    token as KenLM does; out-of-vocabulary words are scored as <unk> and their share is
    returned as ``oov_rate`` (percent). ``chars`` scores the character LM's token form.
    """
    import kenlm

    model = kenlm.Model(str(model_path))
    total, tokens, oov, n = 0.0, 0, 0, 0
    for s in sentences:
        text = char_sentence(s) if chars else s
        if not text:
            continue
        total += model.score(text, bos=True, eos=True)
        words = text.split()
        tokens += len(words) + 1
        oov += sum(1 for w in words if w not in model)
        n += 1
    if not tokens:
        return {"perplexity": math.nan, "oov_rate": math.nan, "sentences": 0}
    return {"perplexity": round(10 ** (-total / tokens), 3), "oov_rate": round(100 * oov / (tokens - n), 3),
            "sentences": n}


def oov_stats(sentences: Iterable[str], vocabulary: set[str]) -> dict[str, float]:
    """Out-of-vocabulary words of ``sentences`` against ``vocabulary`` (e.g. the lexicon a
    decoder can spell): tokens, OOV tokens, their rate (percent) and distinct OOV words."""
    tokens = oov = 0
    types: set[str] = set()
    for s in sentences:
        for w in s.split():
            tokens += 1
            if w not in vocabulary:
                oov += 1
                types.add(w)
    return {"tokens": tokens, "oov_tokens": oov, "oov_rate": round(100 * oov / tokens, 3) if tokens else math.nan,
            "oov_types": len(types)}


def read_lexicon_words(path: str | Path) -> set[str]:
    """The words of a lexicon file (``word<TAB>spelling`` per line)."""
    with open(path, encoding="utf-8") as f:
        return {line.split("\t", 1)[0] for line in f if line.strip()}


LM_CORPORA = ("lm-corpus.txt.gz", "librispeech-lm-norm.txt.gz")


def find_corpora(archive_dir: Path) -> list[Path]:
    """The dataset's LM text in the download stage's directory (synth: lm-corpus.txt.gz;
    LibriSpeech: librispeech-lm-norm.txt.gz, when its lm_corpus is on), or, for a combined
    dataset, each part's (``<archives>/<part>/``, in part order): possibly none."""
    out = [archive_dir / name for name in LM_CORPORA if (archive_dir / name).exists()]
    if out:
        return out[:1]
    parts = archive_dir / "parts.json"
    if parts.is_file():
        for part in json.loads(parts.read_text(encoding="utf-8"))["parts"]:
            out += find_corpora(archive_dir / part)
    return out


def lm_text(cfg: LMConfig, corpora: list[Path], transcripts: Iterable[str]) -> Iterator[str]:
    """The LM's source lines, streamed in ``cfg.sources`` order: the dataset's LM corpora
    (text or .gz files; none when the dataset has none) and/or the training transcripts."""
    if "corpus" in cfg.sources:
        for corpus in corpora:
            yield from corpus_lines(corpus)
    if "transcripts" in cfg.sources:
        yield from transcripts

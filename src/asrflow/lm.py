"""KenLM n-gram language model: text preparation, lmplz, build_binary, lexicon."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from asrflow.text import SPACE, normalize


class LMError(RuntimeError):
    """lmplz/build_binary failed; the message says which setting to change."""


def corpus_lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield from f


def prepare_text(lines: Iterable[str], alphabet: set[str]) -> tuple[list[str], int]:
    """Normalise LM text: lower case, collapsed whitespace, only ``alphabet`` characters.

    A line holding any other character is skipped and counted (returned second), so the
    LM never learns words the acoustic model cannot spell.
    """
    kept, skipped = [], 0
    for line in lines:
        t = normalize(line)
        if not t:
            continue
        if set(t) - alphabet - {" "}:
            skipped += 1
            continue
        kept.append(t)
    return kept, skipped


def _run(cmd: list[str], what: str, stdin: Any = None) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise LMError(f"{cmd[0]} not found on PATH: run `make install` (it builds KenLM into .tools/kenlm/bin)")
    proc = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        hint = ""
        if "std::bad_alloc" in err or "Cannot allocate memory" in err or "mmap" in err.lower():
            hint = " (out of memory: lower 'lm.memory' in params.yaml)"
        elif "No space left" in err:
            hint = " (out of disk: free space or point TMPDIR elsewhere)"
        raise LMError(f"{what} failed with exit {proc.returncode}{hint}:\n{err[-2000:]}")
    return proc


def build_lm(text: list[str], out_dir: str | Path, order: int, memory: str = "20%",
             binary_type: str = "probing") -> dict[str, Any]:
    """Train an ARPA model with ``lmplz`` and convert it with ``build_binary``.

    Writes ``lm.arpa``, ``lm.bin`` and ``lexicon.txt`` (flashlight format: word then its
    characters and the word separator) into ``out_dir``. ``--discount_fallback`` is added
    only if lmplz rejects the corpus's count statistics (small or generated text).
    Returns metrics (sentences, words, vocabulary size, sizes on disk).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arpa, binary = out_dir / "lm.arpa", out_dir / "lm.bin"
    with tempfile.TemporaryDirectory(prefix="lmplz-") as tmp:
        text_path = Path(tmp) / "text.txt"
        text_path.write_text("".join(t + "\n" for t in text), encoding="utf-8")
        base = ["lmplz", "-o", str(order), "-S", memory, "-T", tmp, "--arpa", str(arpa)]
        fallback = False
        try:
            with open(text_path) as f:
                _run(base, "lmplz", stdin=f)
        except LMError as e:
            if "BadDiscountException" not in str(e) and "discount" not in str(e).lower():
                raise
            fallback = True
            with open(text_path) as f:
                _run(base + ["--discount_fallback"], "lmplz --discount_fallback", stdin=f)
    _run(["build_binary", "-s", binary_type, str(arpa), str(binary)], "build_binary")
    words = sorted({w for t in text for w in t.split()})
    write_lexicon(words, out_dir / "lexicon.txt")
    return {"sentences": len(text), "words": sum(len(t.split()) for t in text), "vocabulary": len(words),
            "discount_fallback": int(fallback), "arpa_mb": round(arpa.stat().st_size / 1e6, 3),
            "binary_mb": round(binary.stat().st_size / 1e6, 3)}


def write_lexicon(words: Iterable[str], path: Path) -> None:
    """flashlight lexicon: ``word<TAB>c h a r s |`` per line."""
    with open(path, "w", encoding="utf-8") as f:
        for w in words:
            f.write(f"{w}\t{' '.join(w)} {SPACE}\n")


LM_CORPORA = ("lm-corpus.txt.gz", "librispeech-lm-norm.txt.gz")


def find_corpus(archive_dir: Path) -> Path | None:
    """The dataset's LM text in the download stage's directory (synth: lm-corpus.txt.gz;
    LibriSpeech: librispeech-lm-norm.txt.gz, when download.librispeech.lm_corpus is on)."""
    for name in LM_CORPORA:
        if (archive_dir / name).exists():
            return archive_dir / name
    return None


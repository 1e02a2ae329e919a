"""Audio decoding for every stage and for serving: :func:`load_audio` (a mono file at the
expected sample rate, by path or bytes), :func:`convert_audio` (anything sox reads to a mono
16-bit WAV) and :func:`prepare_audio` (either, as needed), raising :class:`AudioError`.

Audio in any container, sample rate or channel count that sox reads is accepted by
:func:`prepare_audio`: a file soundfile reads at the wanted sample rate in mono is used as
is, anything else is converted by sox first.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file."""


def load_audio(src: str | Path | bytes, sample_rate: int, name: str | None = None) -> np.ndarray:
    """Decode a mono file (a path, or its encoded bytes: any bytes-like object) at
    ``sample_rate`` to float32 in [-1, 1].

    Raises :class:`AudioError` naming the file (``name`` for bytes) if it is unreadable,
    not mono or at another sample rate (the manifest stage rejects such files before training).
    """
    is_path = isinstance(src, (str, Path))
    path = name or (str(src) if is_path else "<bytes>")
    try:
        wav, sr = sf.read(str(src) if is_path else io.BytesIO(src), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for bad files
        raise AudioError(f"{path}: cannot decode audio: {e}") from e
    if sr != sample_rate:
        raise AudioError(f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz")
    if wav.shape[1] != 1:
        raise AudioError(f"{path}: {wav.shape[1]} channels, expected mono")
    return wav[:, 0]


def convert_audio(path: str | Path, sample_rate: int, out_path: str | Path) -> Path:
    """Convert ``path`` with sox to a 16-bit mono WAV at ``sample_rate`` (``out_path``).

    Raises :class:`AudioError` naming ``path`` if sox is missing or cannot read it.
    """
    sox = shutil.which("sox")
    if sox is None:
        raise AudioError(f"{path}: not {sample_rate} Hz mono and sox, which converts it, is not installed "
                         "(apt-get install sox)")
    out_path = Path(out_path)
    # absolute input path: a name starting with '-' is never taken for an option
    # -D: no dither (sox dithers with fresh noise on every run by default): the same file always
    # gives the same samples, so the same transcript
    cmd = [sox, "-V1", "-D", str(Path(path).absolute()), "-r", str(sample_rate), "-c", "1", "-b", "16",
           "-e", "signed-integer", str(out_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0 or not out_path.exists():
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        # "/usr/bin/sox FAIL formats: can't open input file `x.wav': WAVE: RIFF header not found"
        reason = re.sub(r"^\S*sox FAIL (\w+: )?", "", lines[-1]) if lines else f"exit status {proc.returncode}"
        raise AudioError(f"{path}: sox cannot convert it: {reason}")
    return out_path


def prepare_audio(path: str | Path, sample_rate: int, work_dir: str | Path) -> np.ndarray:
    """The waveform of ``path`` as float32 mono at ``sample_rate``.

    Used directly when soundfile reads it at that rate in mono; otherwise converted by
    sox (:func:`convert_audio`) into ``work_dir`` (the converted file is removed after
    reading). Raises :class:`AudioError` naming the file: missing, a directory, not
    readable, empty (0 bytes or 0 samples) or not decodable.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{path}: no such file")
    if p.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not os.access(p, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    if p.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        info = sf.info(str(p))
        sf_error = None
    except Exception as e:  # soundfile raises several types for files it cannot parse
        info, sf_error = None, str(e).replace(f"Error opening {str(p)!r}: ", "").strip()
    if info is not None and info.samplerate == sample_rate and info.channels == 1:
        wav = load_audio(p, sample_rate, name=str(path))
    else:
        fd, tmp = tempfile.mkstemp(dir=work_dir, suffix=".wav")
        os.close(fd)
        try:
            try:
                convert_audio(p, sample_rate, tmp)
            except AudioError as e:
                if sf_error is None:
                    raise
                raise AudioError(f"{path}: not a readable audio file (soundfile: {sf_error.rstrip('.')}; "
                                 f"{str(e).removeprefix(f'{path}: ').replace('sox cannot convert it: ', 'sox: ')})"
                                 ) from e
            wav = load_audio(tmp, sample_rate, name=str(path))
        finally:
            Path(tmp).unlink(missing_ok=True)
    if wav.size == 0:
        raise AudioError(f"{path}: no audio samples (0 frames)")
    return wav

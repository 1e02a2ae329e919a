"""Shared by the manifest tests: a manifest config with small row groups and a tone writer."""

import numpy as np
import soundfile as sf

from asrflow.data.manifest import ManifestConfig

# 10 ms hop, conv time strides 3 and 1 (kernel 5): 30 ms per model frame, as the defaults
CFG = ManifestConfig(min_duration=0.3, max_duration=5.0, allowed_chars="abcdefghijklmnopqrstuvwxyz'",
                     sample_rate=16000, workers=1, audio_bytes=True, audio_codec="flac", row_group_rows=2, hop_ms=10.0,
                     conv_kernel_t=5, time_strides=(3, 1), language="en", resample=False)


def tone(path, seconds=1.0, sr=16000, channels=1, fmt="FLAC"):
    """A 440 Hz tone of ``seconds`` written with soundfile (``fmt``: FLAC, WAV, ...)."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, format=fmt)

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from asrflow.data.audio import load_audio
from asrflow.features.geometry import ctc_min_frames
from asrflow.data.manifest import ManifestAudio, ManifestConfig, read_manifest, write_manifests
from conftest import model_config

# 10 ms hop, conv time strides 3 and 1 (kernel 5): 30 ms per model frame, as the defaults
CFG = ManifestConfig(min_duration=0.3, max_duration=5.0, allowed_chars="abcdefghijklmnopqrstuvwxyz'",
                     sample_rate=16000, workers=1, audio_bytes=True, audio_codec="flac", row_group_rows=2, hop_ms=10.0,
                     conv_kernel_t=5, time_strides=(3, 1))


def tone(path, seconds=1.0, sr=16000, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, format="FLAC")


def test_parquet_carries_audio_in_duration_sorted_row_groups(tmp_path):
    raw = tmp_path / "raw" / "LibriSpeech" / "train" / "7" / "1"
    raw.mkdir(parents=True)
    secs = [1.5, 0.5, 2.5, 1.0, 2.0]
    for i, d in enumerate(secs):
        tone(raw / f"7-1-{i:04d}.flac", seconds=d)
    (raw / "7-1.trans.txt").write_text("".join(f"7-1-{i:04d} HI\n" for i in range(len(secs))))
    sizes = {}
    for embed, codec, workers in ((True, "flac", 1), (True, "pcm16", 1), (True, "pcm16", 2), (False, "flac", 1)):
        out = tmp_path / f"man-{embed}-{codec}-{workers}"
        write_manifests(tmp_path / "raw", {"train": ["train"]}, out,
                        dataclasses.replace(CFG, audio_bytes=embed, audio_codec=codec, workers=workers))
        pf = pq.ParquetFile(out / "train.parquet")
        assert [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)] == [2, 2, 1]
        assert ("audio" in pf.schema_arrow.names) == embed
        rows = read_manifest(out / "train.parquet")
        assert "audio" not in rows and rows["duration"].tolist() == sorted(secs)
        audio = ManifestAudio(out / "train.parquet", 16000)
        assert audio.embedded == embed and (audio.codec == codec or not embed)
        # decoded from the embedded audio == decoded from the file, bit for bit, in any access order
        for i in (4, 0, 3, 1, 2):
            assert np.array_equal(audio[i], load_audio(rows["audio_filepath"][i], 16000))
            assert audio[i].dtype == np.float32
        sizes[codec, embed] = pf.metadata.row_group(0).column(7).total_uncompressed_size if embed else 0
        if embed:
            with pytest.raises(ValueError, match="stored at 16000 Hz, 8000 Hz wanted"):
                ManifestAudio(out / "train.parquet", 8000)
    assert sizes["pcm16", True] > sizes["flac", True]  # a pure tone compresses far below 16 bits in FLAC
    # two processes decoding row groups ahead of the writer: the same file as one
    assert (tmp_path / "man-True-pcm16-1/train.parquet").read_bytes() == \
        (tmp_path / "man-True-pcm16-2/train.parquet").read_bytes()


def test_ctc_min_frames_counts_repeats():
    assert ctc_min_frames("abc") == 3 and ctc_min_frames("hello") == 6 and ctc_min_frames("aaa") == 5


@pytest.mark.parametrize("frames", [1, 7, 100, 333])
def test_model_frames_match_the_model(frames):
    import torch
    from asrflow.models.deepspeech2 import DeepSpeech2
    m = DeepSpeech2(model_config(16, 5, conv_channels=2, conv_strides=[(2, 3), (2, 1)], conv_kernel=[5, 5],
                                 rnn_layers=1, rnn_hidden=4))
    samples = (frames - 1) * 160
    _, lens = m(torch.zeros(1, frames, 16), torch.tensor([frames]))
    assert CFG.model_frames(samples) == int(lens[0])

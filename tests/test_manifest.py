import dataclasses
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from asrflow.features import load_audio
from asrflow.geometry import ctc_min_frames
from asrflow.manifest import REASONS, ManifestAudio, ManifestConfig, read_manifest, write_manifests

# 10 ms hop, conv time strides 3 and 1 (kernel 5): 30 ms per model frame, as the defaults
CFG = ManifestConfig(min_duration=0.3, max_duration=5.0, allowed_chars="abcdefghijklmnopqrstuvwxyz'",
                     sample_rate=16000, workers=1, audio_bytes=True, row_group_rows=2, hop_ms=10.0,
                     conv_kernel_t=5, time_strides=(3, 1))


def tone(path, seconds=1.0, sr=16000, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, format="FLAC")


def make_tree(root):
    """A LibriSpeech-layout subset with one file of every bad kind among good ones."""
    ch = root / "LibriSpeech" / "train" / "100" / "1"
    ch.mkdir(parents=True)
    lines = {}
    for i, secs in enumerate((1.2, 0.8, 1.0)):
        tone(ch / f"100-1-000{i}.flac", seconds=secs)
        lines[f"100-1-000{i}"] = "HELLO WORLD"
    tone(ch / "100-1-0100.flac")
    data = (ch / "100-1-0100.flac").read_bytes()
    (ch / "100-1-0100.flac").write_bytes(data[:60])                  # header cut short
    tone(ch / "100-1-0110.flac", seconds=3.0)
    data = (ch / "100-1-0110.flac").read_bytes()
    (ch / "100-1-0110.flac").write_bytes(data[: len(data) // 2])     # truncated: header intact, frames missing
    tone(ch / "100-1-0111.flac", seconds=0.6)                         # 20 model frames for 41 characters
    lines["100-1-0110"] = "SOME WORDS"
    lines["100-1-0111"] = "A SENTENCE FAR TOO LONG FOR SIX TENTHS OF A"
    (ch / "100-1-0101.flac").write_bytes(b"")                          # 0-byte
    (ch / "100-1-0102.flac").write_bytes(b"this is not audio" * 50)  # non-audio bytes
    tone(ch / "100-1-0103.flac", sr=8000)                              # wrong sample rate
    tone(ch / "100-1-0104.flac", channels=2)                           # stereo
    tone(ch / "100-1-0105.flac", seconds=0.1)                          # too short
    tone(ch / "100-1-0106.flac")                                       # bad characters
    tone(ch / "100-1-0107.flac")                                       # no transcript line
    tone(ch / "100-1-0108.flac")                                       # empty transcript
    for k in ("0100", "0101", "0102", "0103", "0104", "0105"):
        lines[f"100-1-{k}"] = "SOME WORDS"
    lines["100-1-0106"] = "CAFÉ 42"
    lines["100-1-0109"] = "NO SUCH FILE"                               # transcript for a missing file
    text = "".join(f"{k} {v}\n" for k, v in lines.items())
    text += "100-1-0000 DUPLICATE LINE\n100-1-0108\n"
    (ch / "100-1.trans.txt").write_text(text)


def test_bad_input_is_quarantined_with_reasons(tmp_path):
    make_tree(tmp_path / "raw")
    out = tmp_path / "man"
    m = write_manifests(tmp_path / "raw", {"train": ["train"]}, out, CFG)
    good = read_manifest(out / "train.parquet")
    assert good["utt_id"].tolist() == ["100-1-0001", "100-1-0002", "100-1-0000"]  # by duration
    assert set(good["text"]) == {"hello world"}
    jl = [json.loads(l) for l in (out / "train.jsonl").read_text().splitlines()]
    assert [set(r) for r in jl] == [{"audio_filepath", "duration", "text"}] * 3
    assert [r["duration"] for r in jl] == [0.8, 1.0, 1.2]
    rejects = pd.read_parquet(out / "rejects.parquet")
    assert rejects["detail"].str.len().min() > 0 and set(rejects["reason"]) <= set(REASONS)
    rej = rejects.set_index("utt_id")["reason"].to_dict()
    assert rej == {"100-1-0100": "unreadable_audio", "100-1-0101": "unreadable_audio",
                   "100-1-0110": "truncated_audio", "100-1-0111": "too_short_for_label",
                   "100-1-0102": "unreadable_audio", "100-1-0103": "wrong_sample_rate", "100-1-0104": "not_mono",
                   "100-1-0105": "too_short", "100-1-0106": "bad_characters", "100-1-0107": "no_transcript",
                   "100-1-0108": "empty_transcript", "100-1-0109": "missing_audio"} | {"100-1-0000": "duplicate_id"}
    assert m["rejected"] == 13 and m["train_utterances"] == 3
    assert m["rejected_unreadable_audio"] == 3 and m["rejected_truncated_audio"] == 1
    assert m["rejected_too_short_for_label"] == 1 and m["train_row_groups"] == 2


def test_parquet_carries_audio_in_duration_sorted_row_groups(tmp_path):
    raw = tmp_path / "raw" / "LibriSpeech" / "train" / "7" / "1"
    raw.mkdir(parents=True)
    secs = [1.5, 0.5, 2.5, 1.0, 2.0]
    for i, d in enumerate(secs):
        tone(raw / f"7-1-{i:04d}.flac", seconds=d)
    (raw / "7-1.trans.txt").write_text("".join(f"7-1-{i:04d} HI\n" for i in range(len(secs))))
    for embed in (True, False):
        out = tmp_path / f"man-{embed}"
        write_manifests(tmp_path / "raw", {"train": ["train"]}, out, dataclasses.replace(CFG, audio_bytes=embed))
        pf = pq.ParquetFile(out / "train.parquet")
        assert [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)] == [2, 2, 1]
        assert ("audio" in pf.schema_arrow.names) == embed
        rows = read_manifest(out / "train.parquet")
        assert "audio" not in rows and rows["duration"].tolist() == sorted(secs)
        audio = ManifestAudio(out / "train.parquet", 16000)
        assert audio.embedded == embed
        # decoded from the embedded bytes == decoded from the file, in any access order
        for i in (4, 0, 3, 1, 2):
            assert np.array_equal(audio[i], load_audio(rows["audio_filepath"][i], 16000))


def test_ctc_min_frames_counts_repeats():
    assert ctc_min_frames("abc") == 3 and ctc_min_frames("hello") == 6 and ctc_min_frames("aaa") == 5


@pytest.mark.parametrize("frames", [1, 7, 100, 333])
def test_model_frames_match_the_model(frames):
    import torch
    from asrflow.model import DeepSpeech2, ModelConfig
    m = DeepSpeech2(ModelConfig(n_mels=16, vocab_size=5, conv_channels=2, conv_strides=[(2, 3), (2, 1)],
                                rnn_layers=1, rnn_hidden=4))
    samples = (frames - 1) * 160
    _, lens = m(torch.zeros(1, frames, 16), torch.tensor([frames]))
    assert CFG.model_frames(samples) == int(lens[0])

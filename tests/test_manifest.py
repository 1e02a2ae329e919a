import json

import numpy as np
import pandas as pd
import soundfile as sf

from asrflow.manifest import ManifestConfig, write_manifests

CFG = ManifestConfig(min_duration=0.3, max_duration=5.0, allowed_chars="abcdefghijklmnopqrstuvwxyz'",
                     sample_rate=16000, workers=1)


def tone(path, seconds=1.0, sr=16000, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, format="FLAC")


def make_tree(root):
    """A LibriSpeech-layout subset with one file of every bad kind among good ones."""
    ch = root / "LibriSpeech" / "train" / "100" / "1"
    ch.mkdir(parents=True)
    lines = {}
    for i in range(3):
        tone(ch / f"100-1-000{i}.flac")
        lines[f"100-1-000{i}"] = "HELLO WORLD"
    tone(ch / "100-1-0100.flac")
    data = (ch / "100-1-0100.flac").read_bytes()
    (ch / "100-1-0100.flac").write_bytes(data[:60])                  # truncated FLAC
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
    good = pd.read_parquet(out / "train.parquet")
    assert good["utt_id"].tolist() == ["100-1-0000", "100-1-0001", "100-1-0002"]
    assert set(good["text"]) == {"hello world"}
    jl = [json.loads(l) for l in (out / "train.jsonl").read_text().splitlines()]
    assert [set(r) for r in jl] == [{"audio_filepath", "duration", "text"}] * 3
    assert abs(jl[0]["duration"] - 1.0) < 1e-6
    rej = pd.read_parquet(out / "rejects.parquet").set_index("utt_id")["reason"].to_dict()
    assert rej == {"100-1-0100": "unreadable_audio", "100-1-0101": "unreadable_audio",
                   "100-1-0102": "unreadable_audio", "100-1-0103": "wrong_sample_rate", "100-1-0104": "not_mono",
                   "100-1-0105": "too_short", "100-1-0106": "bad_characters", "100-1-0107": "no_transcript",
                   "100-1-0108": "empty_transcript", "100-1-0109": "missing_audio"} | {"100-1-0000": "duplicate_id"}
    assert m["rejected"] == 11 and m["train_utterances"] == 3
    assert m["rejected_unreadable_audio"] == 3

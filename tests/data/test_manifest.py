import dataclasses

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from asrflow.data.audio import load_audio
from asrflow.features.geometry import ctc_min_frames
from asrflow.data.manifest import ManifestAudio, read_manifest, write_manifests
from conftest import model_config
from manifest_fixtures import CFG, tone

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
        sizes[codec, embed] = (pf.metadata.row_group(0).column(pf.schema_arrow.names.index("audio")).total_uncompressed_size
                                   if embed else 0)
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


def test_every_file_is_a_row_or_a_reject_and_audio_pairs_with_its_own_line(tmp_path):
    """The same id in two chapters pairs each line with the audio beside it (the second is a
    duplicate, its own file rejected); other formats and stray files are rejected as such, not
    dropped or called missing; WAV bytes under a .flac name are not FLAC."""
    base = tmp_path / "raw" / "LibriSpeech" / "train" / "5"
    a, b = base / "1", base / "2"
    a.mkdir(parents=True)
    b.mkdir()
    tone(a / "5-1-0001.flac", seconds=1.0)
    tone(b / "5-1-0001.flac", seconds=2.0)                      # same id, other chapter
    tone(a / "5-1-0002.wav", fmt="WAV")                         # listed, but WAV
    tone(a / "5-1-0003.FLAC")                                   # listed, upper-case extension
    tone(a / "5-1-0004.flac", fmt="WAV")                        # WAV bytes named .flac
    tone(a / "5-1-0005.wav", fmt="WAV")                         # not listed, WAV
    (a / "notes.txt").write_text("recorded on a Tuesday\n")      # a stray file
    (a / "5-1.trans.txt").write_text("5-1-0001 FIRST CHAPTER\n5-1-0002 A WAV\n5-1-0003 UPPER\n5-1-0004 WAV BYTES\n")
    (b / "5-2.trans.txt").write_text("5-1-0001 SECOND CHAPTER\n")
    out = tmp_path / "man"
    write_manifests(tmp_path / "raw", {"train": ["train"]}, out, CFG)
    good = read_manifest(out / "train.parquet")
    assert good[["utt_id", "text"]].values.tolist() == [["5-1-0001", "first chapter"]]
    assert good["audio_filepath"].tolist() == [str(a / "5-1-0001.flac")] and good["duration"].tolist() == [1.0]
    rej = pd.read_parquet(out / "rejects.parquet")
    by_path = dict(zip(rej["path"], rej["reason"]))
    assert by_path == {str(b / "5-1-0001.flac"): "duplicate_id", str(a / "5-1-0002.wav"): "unsupported_format",
                       str(a / "5-1-0003.FLAC"): "unsupported_format", str(a / "5-1-0004.flac"): "unsupported_format",
                       str(a / "5-1-0005.wav"): "unsupported_format", str(a / "notes.txt"): "unsupported_format"}
    assert "WAV data in a .flac file" in rej.set_index("path").loc[str(a / "5-1-0004.flac"), "detail"]
    assert "repeats the id of" in rej.set_index("path").loc[str(b / "5-1-0001.flac"), "detail"]


def test_the_invariant_check_catches_a_dropped_file():
    from asrflow.data.manifest import check_accounted

    check_accounted(["a.flac", "b.flac"], ["a.flac"], [{"path": "b.flac"}])
    with pytest.raises(RuntimeError, match=r"not accounted for: \['c.flac'\]"):
        check_accounted(["a.flac", "c.flac"], ["a.flac"], [])
    with pytest.raises(RuntimeError, match="counted twice"):
        check_accounted(["a.flac"], ["a.flac"], [{"path": "a.flac"}])

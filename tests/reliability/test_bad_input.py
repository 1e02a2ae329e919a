"""Bad audio and transcripts of every kind: quarantined in the rejects table with a reason,
counted, and the manifest stage succeeds for the rest."""

import json
import shutil
import sys
import tarfile

import pandas as pd

from asrflow.data.archives import hash_file, read_checksums, write_checksums
from asrflow.data.manifest import REASONS, read_manifest, write_manifests
from conftest import TRAIN_ENV, run
from manifest_fixtures import CFG, tone


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


EXPECTED = {"100-1-0100": "unreadable_audio", "100-1-0101": "unreadable_audio", "100-1-0110": "truncated_audio",
            "100-1-0111": "too_short_for_label", "100-1-0102": "unreadable_audio", "100-1-0103": "wrong_sample_rate",
            "100-1-0104": "not_mono", "100-1-0105": "too_short", "100-1-0106": "bad_characters",
            "100-1-0107": "no_transcript", "100-1-0108": "empty_transcript", "100-1-0109": "missing_audio",
            "100-1-0000": "duplicate_id"}


def test_manifest_stage_quarantines_bad_files_and_succeeds_for_the_rest(data_repo, tmp_path):
    """The real stage over the synth archives, the train archive repacked with one more
    speaker whose files are bad in every way."""
    arch = data_repo / "runs/bad-input/archives"
    shutil.copytree(data_repo / "data/synth/archives", arch)
    tree = tmp_path / "tree"
    with tarfile.open(arch / "train.tar.gz") as tar:
        tar.extractall(tree, filter="data")
    make_tree(tree)  # LibriSpeech/train/100/1/...
    with tarfile.open(arch / "train.tar.gz", "w:gz") as tar:
        tar.add(tree / "LibriSpeech", arcname="LibriSpeech")
    write_checksums(arch, {**read_checksums(arch), "train.tar.gz": hash_file(arch / "train.tar.gz")})
    out = data_repo / "runs/bad-input/manifests"
    proc = run([sys.executable, "stages/manifest.py", "--params", "params.yaml", "--dataset", "synth", "--archives",
                str(arch), "--raw", str(data_repo / "runs/bad-input/raw"), "--out", str(out), "--metrics",
                str(data_repo / "runs/bad-input/manifest.json")], cwd=data_repo, env=TRAIN_ENV)
    metrics = json.loads((data_repo / "runs/bad-input/manifest.json").read_text())
    clean = json.loads((data_repo / "metrics/synth/manifest.json").read_text())  # the same corpus without them
    rejects = pd.read_parquet(out / "rejects.parquet")
    ours = rejects[rejects["utt_id"].str.startswith("100-1-")].set_index("utt_id")["reason"].to_dict()
    assert ours == EXPECTED, ours
    assert metrics["rejected"] == clean["rejected"] + len(EXPECTED)
    assert metrics["train_utterances"] == clean["train_utterances"] + 3  # the three good files of the speaker
    for reason in set(EXPECTED.values()):
        assert metrics[f"rejected_{reason}"] == clean.get(f"rejected_{reason}", 0) + \
            sum(r == reason for r in EXPECTED.values()), reason
    assert f"{metrics['rejected']} utterances rejected" in proc.stderr and "rejects.parquet" in proc.stderr
    train = read_manifest(out / "train.parquet")
    assert {"100-1-0000", "100-1-0001", "100-1-0002"} <= set(train["utt_id"])

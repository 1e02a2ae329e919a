"""Every dataset source end to end through the real download and manifest stages, on small
corpora built here from espeak-ng speech: a folder + TSV, NeMo manifests, a Kaldi data dir
(segments, utt2spk, a wav.scp command), a Common Voice release archive of 48 kHz MP3s, and
AISHELL-1's nested archives (Mandarin, spoken by espeak-ng's cmn voice) served over
127.0.0.1. Bad input per source ends as a reject naming the file, never a crash or a silent
drop: each test counts every input as a row or a reject."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from conftest import REPO, TRAIN_ENV, tiny_params

from asrflow.data.manifest import ManifestAudio, read_manifest

SPLITS = {"train": ["train"], "dev": ["dev"], "test": ["test"]}
ENGLISH = ["hello world", "good morning", "thank you very much", "see you later", "open the door",
           "the cat sat down"]
MANDARIN = ["你好 世界", "今天 天气 很好", "谢谢 你", "我们 走 吧", "请 开门", "早上 好"]


def speak(text: str, voice: str = "en-us") -> tuple[np.ndarray, int]:
    """espeak-ng's 22.05 kHz speech of ``text`` as float32 samples."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "170", "--stdout", text], capture_output=True,
                         check=True).stdout
    data, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return data, sr


def write_speech(path: Path, text: str, rate: int = 16000, fmt: str | None = None, voice: str = "en-us") -> Path:
    from scipy.signal import resample_poly
    data, sr = speak(text, voice)
    g = np.gcd(sr, rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, resample_poly(data, rate // g, sr // g), rate, format=fmt)
    return path


def run_stages(tmp_path: Path, name: str, entry: dict, expect_ok: bool = True, lineage: bool = False):
    """download then manifest for dataset ``name`` (``entry`` added to the tiny params);
    ``lineage``: each stage also writes ``<stage>-lineage.json``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tiny_params()
    p["datasets"][name], p["train_per_dataset"][name] = entry, {}
    p["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "artifacts")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False, allow_unicode=True))
    base = [sys.executable, "--params", str(tmp_path / "params.yaml"), "--dataset", name]
    env = {**os.environ, **TRAIN_ENV}
    arch = tmp_path / "archives"
    for stage, args in (("download", ["--out", str(arch), "--store", str(tmp_path / "store"),
                                      "--metrics", str(tmp_path / "download.json")]),
                        ("manifest", ["--archives", str(arch), "--raw", str(tmp_path / "raw"),
                                      "--out", str(tmp_path / "manifests"), "--metrics", str(tmp_path / "manifest.json")])):
        cmd = [base[0], str(REPO / f"stages/{stage}.py"), *base[1:], *args]
        if lineage:
            cmd += ["--lineage-file", str(tmp_path / f"{stage}-lineage.json")]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        if proc.returncode != 0:
            assert not expect_ok, f"{stage}: {proc.stderr[-3000:]}"
            return proc
    assert expect_ok
    rejects = pd.read_parquet(tmp_path / "manifests" / "rejects.parquet")
    metrics = json.loads((tmp_path / "manifest.json").read_text())
    return metrics, rejects, {s: read_manifest(tmp_path / "manifests" / f"{s}.parquet") for s in SPLITS}


def relist(tmp_path: Path, name: str, entry: dict) -> dict[str, int]:
    """Rejects per reason when the downloaded corpus of :func:`run_stages` is listed again with
    ``entry``'s reading options (through the library, as the manifest stage calls it)."""
    from collections import Counter

    from asrflow.data.manifest import ManifestConfig, build_split
    from asrflow.data.sources import source_of
    from asrflow.models.frames import frame_geometry
    p = tiny_params()
    p["datasets"][name], p["train_per_dataset"][name] = entry, {}
    source = source_of(entry)
    opened, _ = source.open(tmp_path / "archives", tmp_path / "raw", 1.0, print)
    cfg = ManifestConfig.from_params(p, frame_geometry(p["model"]), name)
    return Counter(r["reason"] for split, subsets in SPLITS.items()
                   for r in build_split(tmp_path / "raw", split, subsets, cfg, source.lister(opened))[1])


def reasons(rejects: pd.DataFrame) -> dict[str, str]:
    """utterance id (or path) -> reason."""
    return {(r.utt_id or r.path): r.reason for r in rejects.itertuples()}


def test_folder_source_reads_a_tsv_and_rejects_what_it_cannot_use(tmp_path):
    """A folder of WAV and FLAC files plus <split>.tsv: rows, a header, a speaker column; a row
    leaving the folder, a missing file, a one-field row and an 8 kHz file are rejects."""
    corpus = tmp_path / "corpus"
    lines = {}
    for i, (split, text) in enumerate(zip(["train", "train", "train", "dev", "test", "test"], ENGLISH)):
        ext = "flac" if i % 2 else "wav"
        write_speech(corpus / "audio" / split / f"u{i}.{ext}", text)
        lines.setdefault(split, ["path\ttext\tspeaker"]).append(f"audio/{split}/u{i}.{ext}\t{text.upper()}\tspk{i % 3}")
    write_speech(corpus / "audio" / "train" / "low.wav", "low rate", rate=8000)
    write_speech(tmp_path / "outside.wav", "outside")
    lines["train"] += ["../outside.wav\toutside", "audio/train/gone.wav\tgone", "audio/train/u0.wav",
                       "audio/train/low.wav\tlow rate"]
    for split, rows in lines.items():
        (corpus / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    entry = {"source": "folder", "language": "en", "resample": False, "splits": SPLITS, "path": str(corpus)}
    metrics, rejects, man = run_stages(tmp_path, "mine", entry)
    assert len(man["train"]) == 3 and len(man["dev"]) == 1 and len(man["test"]) == 2
    assert set(man["train"]["text"]) == set(ENGLISH[:3])  # normalised: lower case
    assert set(man["train"]["speaker_id"]) == {"spk0", "spk1", "spk2"}
    got = reasons(rejects)
    assert got == {"..-outside": "outside_corpus", "audio-train-gone": "missing_audio",
                   next(r.path for r in rejects.itertuples() if r.reason == "malformed_line"): "malformed_line",
                   "audio-train-low": "wrong_sample_rate"}, got
    assert "train.tsv:7" in rejects.set_index("reason").loc["malformed_line", "path"]
    assert "resample: true" in rejects.set_index("reason").loc["wrong_sample_rate", "detail"]
    assert metrics["rejected"] == 4 and metrics["train_speakers"] == 3


def test_nemo_source_reads_segments_by_offset(tmp_path):
    """NeMo JSON lines: relative paths, an offset + duration segment stored as exactly that
    slice of its file; bad JSON and a segment past the end are rejects."""
    corpus = tmp_path / "nemo"
    rows: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, (split, text) in enumerate(zip(["train", "train", "dev", "test"], ENGLISH)):
        path = write_speech(corpus / "wav" / f"n{i}.wav", text)
        rows[split].append(json.dumps({"audio_filepath": f"wav/{path.name}", "duration": sf.info(path).duration,
                                       "text": text}))
    long = write_speech(corpus / "wav" / "long.wav", "one two three four five six seven eight nine ten")
    whole = sf.info(long).duration
    rows["train"] += [json.dumps({"audio_filepath": str(long), "offset": 0.5, "duration": whole - 1.0,
                                  "text": "part of it", "id": "seg1"}),
                      json.dumps({"audio_filepath": "wav/long.wav", "offset": whole - 0.2, "duration": 1.5,
                                  "text": "past the end", "id": "seg2"}),
                      '{"audio_filepath": "wav/n0.wav", "text": ']
    for split, lines in rows.items():
        (corpus / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    entry = {"source": "nemo", "language": "en", "resample": False, "splits": SPLITS, "path": str(corpus)}
    metrics, rejects, man = run_stages(tmp_path, "nemo_set", entry)
    assert set(man["train"]["utt_id"]) == {"n0", "n1", "seg1"}
    seg = man["train"].set_index("utt_id").loc["seg1"]
    assert seg["offset"] == 0.5 and abs(seg["duration"] - (whole - 1.0)) < 1e-6
    audio = ManifestAudio(tmp_path / "manifests" / "train.parquet", 16000)
    i = int(np.flatnonzero(man["train"]["utt_id"] == "seg1")[0])
    expected, _ = sf.read(long, dtype="int16", start=8000, frames=int(round((whole - 1.0) * 16000)))
    assert np.array_equal(audio[i], expected.astype(np.float32) / 32768)
    assert sorted(rejects["reason"]) == ["bad_segment", "malformed_line"], rejects
    jl = [json.loads(x) for x in (tmp_path / "manifests" / "train.jsonl").read_text().splitlines()]
    assert [r.get("offset") for r in jl if r["text"] == "part of it"] == [0.5]


def test_kaldi_source_with_segments_speakers_and_wav_scp_commands(tmp_path):
    """A Kaldi data dir per subset. A wav.scp command is refused unless allow_pipes; allowed, it
    runs without a shell (a ';' or '>' in it is still refused) and its output is read."""
    root = tmp_path / "kaldi"
    for subset, texts in (("train", ENGLISH[:3]), ("dev", ENGLISH[3:4]), ("test", ENGLISH[4:])):
        d = root / subset
        d.mkdir(parents=True)
        wav, text, spk = [], [], []
        for j, t in enumerate(texts):
            rec = f"{subset}-r{j}"
            path = write_speech(d / f"{rec}.wav", t)
            wav.append(f"{rec} {path}")
            text.append(f"{rec} {t.upper()}")
            spk.append(f"{rec} s{j}")
        if subset == "train":  # a recording made by a command, and one with shell syntax
            src = write_speech(d / "piped.flac", "made by a pipe")
            wav += [f"piped sox {src} -t wav - |", f"evil cat {src} ; rm -rf / |"]
            text += ["piped MADE BY A PIPE", "evil SHOULD NOT RUN"]
            long = write_speech(d / "long.wav", "one two three four five six seven eight nine ten")
            wav.append(f"longrec {long}")
            text += ["seg-a FIRST PART", "seg-b SECOND PART"]
            # with a segments file, every utterance is a segment of a recording
            whole = [f"{r} {r} 0 {sf.info(d / f'{r}.wav').duration}\n" for r in (f"{subset}-r{j}" for j in range(3))]
            (d / "segments").write_text("".join(whole) + "piped piped 0 1.0\nevil evil 0 1\n"
                                        "seg-a longrec 0.2 1.6\nseg-b longrec 1.6 3.0\n")
        (d / "wav.scp").write_text("\n".join(wav) + "\n")
        (d / "text").write_text("\n".join(text) + "\n")
        (d / "utt2spk").write_text("\n".join(spk) + "\n")
    entry = {"source": "kaldi", "language": "en", "resample": False, "splits": SPLITS, "path": str(root),
             "allow_pipes": False}
    metrics, rejects, man = run_stages(tmp_path, "kaldi_set", entry)
    got = reasons(rejects)
    assert got == {"piped": "pipe_refused", "evil": "pipe_refused"}, got
    assert "allow_pipes: true" in rejects.set_index("utt_id").loc["piped", "detail"]
    assert {"seg-a", "seg-b"} <= set(man["train"]["utt_id"])
    assert man["train"].set_index("utt_id").loc["train-r1", "speaker_id"] == "s1"
    entry["allow_pipes"] = True
    metrics, rejects, man = run_stages(tmp_path, "kaldi_set", entry)
    assert reasons(rejects) == {"evil": "pipe_refused"} and "needs a shell" in rejects["detail"][0]
    piped = man["train"].set_index("utt_id").loc["piped"]
    assert piped["text"] == "made by a pipe" and abs(piped["duration"] - 1.0) < 1e-6
    assert Path(piped["audio_filepath"]).is_file()


def cv_archive(tmp_path: Path) -> Path:
    """A Common Voice release archive: cv-corpus-x/en/{train,dev,test}.tsv + clips/*.mp3 at 48 kHz."""
    base = tmp_path / "cvsrc" / "cv-corpus-0.0-test" / "en"
    header = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents"
    rows: dict[str, list[str]] = {s: [header] for s in SPLITS}
    for i, (split, text) in enumerate(zip(["train", "train", "train", "dev", "test", "test"], ENGLISH)):
        write_speech(base / "clips" / f"common_voice_en_{i}.mp3", text, rate=48000, fmt="MP3")
        rows[split].append(f"client{i % 2}\tcommon_voice_en_{i}.mp3\ts{i}\t{text.capitalize()}.\t\t2\t0\t\t\t")
    (base / "clips" / "common_voice_en_99.mp3").write_bytes(b"ID3" + os.urandom(3000))  # does not decode
    rows["train"].append("client9\tcommon_voice_en_99.mp3\ts99\tBroken clip.\t\t2\t0\t\t\t")
    for split, lines in rows.items():
        (base / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "cv-corpus-0.0-test-en.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(tmp_path / "cvsrc" / "cv-corpus-0.0-test", arcname="cv-corpus-0.0-test")
    return out


def test_common_voice_archive_mp3s_are_resampled_once(tmp_path):
    """A release archive of 48 kHz MP3 clips: extracted, sentences' punctuation removed, each
    clip decoded and resampled once into 16 kHz pcm16 rows, a speaker per client_id; the clip
    that does not decode is a reject naming it. Without resample: every clip is rejected for
    its rate, and the stage says the split is empty."""
    archive = cv_archive(tmp_path / "src")
    entry = {"source": "common_voice", "language": "en", "resample": True, "splits": SPLITS, "path": str(archive)}
    metrics, rejects, man = run_stages(tmp_path / "a", "cv", entry)
    assert reasons(rejects) == {"common_voice_en_99": "unreadable_audio"}, rejects
    assert "common_voice_en_99.mp3" in rejects["path"][0]
    assert sorted(man["train"]["text"]) == sorted(ENGLISH[:3])
    assert len(man["train"]) == 3 and set(man["train"]["speaker_id"]) == {"client0", "client1"}
    audio = ManifestAudio(tmp_path / "a" / "manifests" / "train.parquet", 16000)
    row = man["train"].iloc[0]
    mp3, sr = sf.read(row["audio_filepath"], dtype="float32")
    assert sr == 48000 and abs(len(audio[0]) - len(mp3) / 3) <= 2
    assert abs(len(audio[0]) / 16000 - row["duration"]) < 2e-3
    # without resample every clip is rejected for its rate (the same listing, read by the library)
    rates = relist(tmp_path / "a", "cv", {**entry, "resample": False})
    assert set(rates) == {"wrong_sample_rate", "unreadable_audio"} and rates["wrong_sample_rate"] == 6, rates


def aishell_archive(tmp_path: Path, hostile: bool = False) -> bytes:
    """data_aishell.tgz as OpenSLR ships it: a transcript and one tar.gz per speaker inside."""
    speakers = {"S0001": ("train", MANDARIN[:3]), "S0002": ("dev", MANDARIN[3:4]), "S0003": ("test", MANDARIN[4:])}
    outer = io.BytesIO()
    lines = []
    with tarfile.open(fileobj=outer, mode="w:gz") as top:
        for spk, (split, texts) in speakers.items():
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w:gz") as tar:
                for j, text in enumerate(texts):
                    utt = f"BAC009{spk}W{j:04d}"
                    path = write_speech(tmp_path / "zh" / f"{utt}.wav", text.replace(" ", ""), voice="cmn",
                                        fmt="WAV")
                    tar.add(path, arcname=f"{split}/{spk}/{utt}.wav")
                    lines.append(f"{utt} {text}")
                if spk == "S0001":  # a recording with no transcript line, as AISHELL-1 has
                    path = write_speech(tmp_path / "zh" / "extra.wav", "多余", voice="cmn", fmt="WAV")
                    tar.add(path, arcname=f"{split}/{spk}/BAC009{spk}W0099.wav")
                if hostile and spk == "S0002":  # writes another speaker's folder
                    tar.add(path, arcname="train/S0001/planted.wav")
            _add(top, f"data_aishell/wav/{spk}.tar.gz", inner.getvalue())
        _add(top, "data_aishell/transcript/aishell_transcript_v0.8.txt", ("\n".join(lines) + "\n").encode())
    return outer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def mirror():
    sys.path.insert(0, str(REPO / "tests" / "reliability"))
    from test_download_faults import Server
    servers = []

    def start(files):
        servers.append(Server(files))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def test_aishell_downloads_extracts_nested_archives_and_normalises_mandarin(tmp_path, mirror):
    """data_aishell.tgz over 127.0.0.1 (checksum pinned by the dataset's checksums entry), the
    speaker archives inside extracted, Mandarin transcripts as characters without spaces; the
    recording without a transcript line is a reject."""
    data = aishell_archive(tmp_path)
    server = mirror({"33/data_aishell.tgz": data})
    entry = {"source": "aishell", "language": "zh", "resample": False, "splits": SPLITS, "mirrors": [server.url],
             "timeout_s": 10, "retries": 1,
             "checksums": {"data_aishell.tgz": "sha256:" + hashlib.sha256(data).hexdigest()}}
    metrics, rejects, man = run_stages(tmp_path, "aishell", entry)
    assert sorted(man["train"]["text"]) == sorted(t.replace(" ", "") for t in MANDARIN[:3])
    assert set(man["train"]["speaker_id"]) == {"S0001"} and metrics["test_speakers_in_train"] == 0
    assert reasons(rejects) == {"BAC009S0001W0099": "no_transcript"}
    assert (tmp_path / "raw" / "data_aishell" / "wav" / ".extracted" / "S0002.tar.gz").exists()


def test_aishell_speaker_archive_writing_another_speaker_is_refused(tmp_path, mirror):
    data = aishell_archive(tmp_path, hostile=True)
    server = mirror({"33/data_aishell.tgz": data})
    entry = {"source": "aishell", "language": "zh", "resample": False, "splits": SPLITS, "mirrors": [server.url],
             "timeout_s": 10, "retries": 1,
             "checksums": {"data_aishell.tgz": "sha256:" + hashlib.sha256(data).hexdigest()}}
    proc = run_stages(tmp_path, "aishell", entry, expect_ok=False)
    assert "S0002.tar.gz" in proc.stderr and "train/S0001/planted.wav" in proc.stderr, proc.stderr[-2000:]
    assert "{train,dev,test}/S0002/" in proc.stderr
    assert not (tmp_path / "raw" / "data_aishell" / "wav" / "train" / "S0001" / "planted.wav").exists()


def test_combined_dataset_draws_each_split_from_its_parts_and_weights_training(tmp_path):
    """A folder corpus (train, dev, test) and a NeMo corpus (train only) as one dataset: ids,
    speakers and subsets carry their part's name, bad rows stay rejects of their part, the
    NeMo part's weight 2.5 reaches the train manifest (dev/test stay unweighted) and training's
    epoch (each of its utterances 2 or 3 times), and the lineage records the parts."""
    from asrflow.train.batches import weighted_rows
    folder = tmp_path / "folder"
    for i, (split, text) in enumerate(zip(["train", "train", "dev", "test"], ENGLISH)):
        write_speech(folder / f"{split}{i}.wav", text)
        with open(folder / f"{split}.tsv", "a") as f:
            f.write(f"{split}{i}.wav\t{text}\tspk{i}\n")
    with open(folder / "train.tsv", "a") as f:
        f.write("missing.wav\tgone\n")
    nemo = tmp_path / "nemo"
    lines = [json.dumps({"audio_filepath": str(write_speech(nemo / f"n{i}.wav", text)), "text": text,
                         "duration": 1.0}) for i, text in enumerate(ENGLISH[4:])]
    (nemo / "train.json").write_text("\n".join(lines) + "\n")
    parts = {"tsv": {"source": "folder", "language": "en", "resample": False, "splits": SPLITS, "path": str(folder)},
             "extra": {"source": "nemo", "language": "en", "resample": False, "splits": {"train": ["train"]},
                       "path": str(nemo)}}
    entry = {"source": "combine", "language": "en", "resample": False, "parts": parts, "weights": {"extra": 2.5},
             "splits": {"train": ["tsv", "extra"], "dev": ["tsv"], "test": ["tsv"]}}
    metrics, rejects, man = run_stages(tmp_path / "run", "mix", entry, lineage=True)
    train = man["train"]
    assert sorted(train["utt_id"]) == ["extra-n0", "extra-n1", "tsv-train0", "tsv-train1"]
    assert set(train["subset"]) == {"tsv/train", "extra/train"} and set(man["dev"]["subset"]) == {"tsv/dev"}
    assert set(train["speaker_id"]) == {"tsv-spk0", "tsv-spk1", ""}  # NeMo names no speaker: it stays unnamed
    assert dict(zip(train["utt_id"], train["weight"])) == {"extra-n0": 2.5, "extra-n1": 2.5, "tsv-train0": 1.0,
                                                           "tsv-train1": 1.0}
    assert set(man["dev"]["weight"]) == set(man["test"]["weight"]) == {1.0}
    assert [(r.utt_id, r.subset, r.reason) for r in rejects.itertuples()] == [("tsv-missing", "tsv/train",
                                                                              "missing_audio")]
    seen, copies = weighted_rows(train, seed=7)
    times = seen["utt_id"].value_counts().to_dict()
    assert times["tsv-train0"] == times["tsv-train1"] == 1 and {times["extra-n0"], times["extra-n1"]} <= {2, 3}
    assert sorted(copies) == sorted(c for n in times.values() for c in range(n))
    assert weighted_rows(train, seed=7)[1] == copies  # seeded: the same epoch every run
    with pytest.raises(ValueError, match="the weights leave none of the 4 training utterances"):
        weighted_rows(train.assign(weight=0.001), seed=7)
    lineage = json.loads((tmp_path / "run" / "manifest-lineage.json").read_text())["parts"]
    assert lineage == {"tsv": {"source": "folder", "weight": 1, "train_utterances": 2, "dev_utterances": 1,
                               "test_utterances": 1},
                       "extra": {"source": "nemo", "weight": 2.5, "train_utterances": 2}}, lineage
    # a split naming a part that lacks it, and a part speaking another language, are refused
    from asrflow.pipeline.config import ParamsError, validate_params
    p = tiny_params()
    p["train_per_dataset"]["mix"] = {}
    p["datasets"]["mix"] = {**entry, "splits": {"train": ["tsv"], "dev": ["extra"], "test": ["tsv"]}}
    with pytest.raises(ParamsError, match="'datasets.mix.splits.dev' draws on part 'extra', whose splits have no"):
        validate_params(p)
    p["datasets"]["mix"] = {**entry, "parts": {**parts, "extra": {**parts["extra"], "language": "zh"}}}
    with pytest.raises(ParamsError, match="'datasets.mix.parts.extra.language' is 'zh' but 'datasets.mix.language'"):
        validate_params(p)


def test_a_dataset_entry_names_its_missing_or_unknown_keys():
    from asrflow.pipeline.config import ParamsError, validate_params
    p = tiny_params()
    p["train_per_dataset"]["mine"] = {}
    mine = {"source": "folder", "language": "en", "resample": False, "splits": SPLITS, "path": "/x"}
    for change, message in [
        ({"source": "kaldi"}, "'datasets.mine': 'allow_pipes' is a required property"),
        ({"mirrors": ["https://example.org"]},
         "unknown key under 'datasets.mine': 'mirrors'.*allowed keys: language, path"),
        ({"language": "fr"}, "'datasets.mine.language' is 'fr'; allowed values"),
    ]:
        p["datasets"]["mine"] = {**mine, **change}
        with pytest.raises(ParamsError, match=message):
            validate_params(p)
    p["datasets"]["mine"] = mine
    # its own train settings: an entry per dataset ({} for none), of the train block's recipe keys only
    for own, message in [
        (None, r"'train_per_dataset' has no entry for dataset 'mine': add 'mine: \{\}'"),
        ({"epochs": 0}, "'train_per_dataset.mine.epochs'"),
        ({"nnodes": 2}, "unknown key under 'train_per_dataset.mine': 'nnodes'.*allowed keys: augment, batch_frames"),
        ({"augment": [{"type": "speed", "prob": 2.0, "factors": [1.0]}]}, r"train_per_dataset.mine.augment\[0\]"),
    ]:
        p["train_per_dataset"] = {**p["train_per_dataset"], "mine": own}
        if own is None:
            p["train_per_dataset"].pop("mine")
        with pytest.raises(ParamsError, match=message):
            validate_params(p)
    p["train_per_dataset"] = {**p["train_per_dataset"], "mine": {}, "mien": {}}
    with pytest.raises(ParamsError, match="'train_per_dataset.mien' names no dataset"):
        validate_params(p)
    p["train_per_dataset"].pop("mien")
    p["dataset"] = "nope"
    p["datasets"].pop("mine")
    p["train_per_dataset"].pop("mine")
    with pytest.raises(ParamsError, match="'dataset' is 'nope', which 'datasets' does not define"):
        validate_params(p)

"""Packaging a recognizer as an MLflow pyfunc model and transcribing files with it.

Real parts throughout: a seeded DeepSpeech2 checkpoint in train.py's layout, KenLM models
built by lmplz, audio made by sox and espeak-ng, an MLflow SQLite store and registry,
and the installed ``asrflow`` console script.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import soundfile as sf
import yaml
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_utils

from asrflow.cli import main
from asrflow.decode.beam import BeamSearch
from asrflow.decode.logprobs import compute_logprobs
from asrflow.data.audio import convert_audio, prepare_audio
from asrflow.serve.loading import ModelLoadError, load_transcriber
from asrflow.serve.model import AsrflowModel
from asrflow.serve.package import package_model
from asrflow.serve.settings import DecoderSettings
from conftest import REPO
from serve_fixtures import FREE, SETTINGS, TOKENS, make_checkpoint, make_lm, sox


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("serving")
    a = {"dir": d, "model": make_checkpoint(d / "model.pt"), "lm": d / "lm"}
    make_lm(a["lm"])
    audio = d / "audio"
    audio.mkdir()
    sox("-n", "-r", "16000", "-c", "1", "-b", "16", str(audio / "tone.wav"), "synth", "1.0", "sine", "440")
    subprocess.run(["espeak-ng", "-w", str(audio / "speech22k.wav"), "the cat sat on the mat"], check=True)
    sox(str(audio / "speech22k.wav"), "-r", "16000", "-c", "1", str(audio / "speech.flac"))
    sox("-n", "-r", "44100", "-c", "2", "-b", "16", str(audio / "stereo44k.wav"), "synth", "1.2", "sine", "300-3000",
        "sine", "500")
    sox("-n", "-r", "8000", "-c", "1", "-b", "16", str(audio / "narrow8k.wav"), "synth", "0.8", "square", "220")
    (audio / "empty.wav").write_bytes(b"")
    (audio / "notes.wav").write_text("this is a text file, not audio\n")
    sox("-n", "-r", "16000", "-c", "1", str(audio / "blip.wav"), "synth", "0.01", "sine", "440")
    a["audio"] = audio
    a["pkg"] = package_model(d / "pkg", a["model"], a["lm"], SETTINGS)
    return a


def reference_transcripts(model_pt: Path, lm_dir: Path, settings: DecoderSettings, wavs: list[Path],
                          tmp: Path) -> list[str]:
    """What the evaluate stage would decode: compute_logprobs over a manifest of ``wavs``
    (16 kHz mono files) and BeamSearch with ``settings``."""
    manifest = tmp / "manifest.parquet"
    pd.DataFrame({"audio_filepath": [str(w) for w in wavs], "duration": [sf.info(str(w)).duration for w in wavs],
                  "text": ["x"] * len(wavs)}).to_parquet(manifest)
    logprobs = compute_logprobs(model_pt, manifest)[0]
    search = BeamSearch(TOKENS, lm_dir, settings.beam_config())
    search.set_weights(settings.alpha, settings.beta)
    return [search.decode(lp) for lp in logprobs]


@pytest.fixture
def tracking(monkeypatch):
    """Undo the process-wide tracking URI (and the env var) mlflow.set_tracking_uri sets."""
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ASRFLOW_MODEL", raising=False)
    yield
    mlflow.set_tracking_uri(None)


def test_decoder_settings_round_trip():
    assert DecoderSettings.from_dict(SETTINGS.to_dict()) == SETTINGS
    best = {"alpha": 1.25, "beta": -0.5, "beam_size": 50, "beam_threshold": 25.0, "token_beam": 0, "mode": "lexicon"}
    assert DecoderSettings.from_dict({**best, "dev_wer": 3.2}).to_dict() == best  # tune/best.json + extra keys
    with pytest.raises(ValueError, match="alpha"):
        DecoderSettings.from_dict({"beta": 0.0})
    with pytest.raises(ValueError, match="mode"):
        DecoderSettings(alpha=1, beta=0, beam_size=8, beam_threshold=25.0, token_beam=0, mode="greedy")


def test_package_holds_only_what_the_mode_needs_and_replaces_atomically(assets, tmp_path):
    pkg = assets["pkg"]
    files = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file())
    # data only: no pickle, no code; MLflow loads it with the installed asrflow's loader module
    assert files == ["MLmodel", "conda.yaml", "data/asrflow/decoder.json", "data/asrflow/lexicon.txt",
                     "data/asrflow/lm.bin", "data/asrflow/model.pt", "python_env.yaml", "requirements.txt"]
    assert yaml.safe_load((pkg / "MLmodel").read_text())["flavors"]["python_function"] == {
        **yaml.safe_load((pkg / "MLmodel").read_text())["flavors"]["python_function"],
        "loader_module": "asrflow.serve.model", "data": "data/asrflow"}
    assert json.loads((pkg / "data/asrflow/decoder.json").read_text()) == SETTINGS.to_dict()
    assert (pkg / "data/asrflow/model.pt").read_bytes() == assets["model"].read_bytes()
    reqs = (pkg / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in reqs) and any(r.startswith("flashlight-text==") for r in reqs)

    free = package_model(tmp_path / "free", assets["model"], assets["lm"], FREE)
    assert sorted(p.name for p in (free / "data/asrflow").iterdir()) == ["char.bin", "decoder.json", "model.pt"]
    # packaging again over it: the new settings, and nothing half-written left beside it
    again = package_model(tmp_path / "free", assets["model"], assets["lm"], SETTINGS)
    assert json.loads((again / "data/asrflow/decoder.json").read_text())["mode"] == "lexicon"
    assert not (again / "data/asrflow/char.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["free"]

    with pytest.raises(FileNotFoundError, match="lm.char_order"):
        package_model(tmp_path / "x", assets["model"], tmp_path / "free", FREE)
    with pytest.raises(ValueError, match="not an asrflow checkpoint"):
        package_model(tmp_path / "x", assets["audio"] / "tone.wav", assets["lm"], SETTINGS)
    assert not (tmp_path / "x").exists()


def test_transcripts_equal_the_evaluate_stages_beam_search(assets, tmp_path):
    good = [assets["audio"] / "tone.wav", assets["audio"] / "speech.flac"]
    ref = reference_transcripts(assets["model"], assets["lm"], SETTINGS, good, tmp_path)
    assert any(ref), "the tiny model should say something, or the comparison proves little"
    model = load_transcriber(str(assets["pkg"]))
    assert isinstance(model, AsrflowModel) and model.sample_rate == 16000
    results = model.transcribe(good)
    assert [r.error for r in results] == [None, None]
    assert [r.text for r in results] == ref
    # the pyfunc interface: a DataFrame with a 'path' column, or a list of paths
    pyfunc = mlflow.pyfunc.load_model(str(assets["pkg"]))
    # its signature (MLflow checks inputs against it): audio paths, a string column, in; the transcripts out
    sig = pyfunc.metadata.signature
    assert sig.inputs.to_dict() == [{"type": "string", "required": True}]
    assert sig.outputs.input_names() == ["path", "text", "error"]
    out = pyfunc.predict(pd.DataFrame({"path": [str(p) for p in good]}))
    assert list(out.columns) == ["path", "text", "error"]
    assert out["text"].tolist() == ref and out["error"].tolist() == [None, None]
    assert pyfunc.predict([str(good[1])])["text"].tolist() == ref[1:]


def test_lexicon_free_package_decodes_like_beam_search(assets, tmp_path):
    wav = assets["audio"] / "tone.wav"
    ref = reference_transcripts(assets["model"], assets["lm"], FREE, [wav], tmp_path)
    pkg = package_model(tmp_path / "free", assets["model"], assets["lm"], FREE)
    assert [r.text for r in load_transcriber(pkg).transcribe([wav])] == ref


def test_other_rates_and_channels_are_converted_by_sox(assets, tmp_path):
    model = load_transcriber(assets["pkg"])
    sources = [assets["audio"] / n for n in ("stereo44k.wav", "narrow8k.wav", "speech22k.wav")]
    assert [(sf.info(str(s)).samplerate, sf.info(str(s)).channels) for s in sources] == [(44100, 2), (8000, 1),
                                                                                          (22050, 1)]
    converted = [convert_audio(s, 16000, tmp_path / f"{s.stem}.wav") for s in sources]
    assert {(sf.info(str(c)).samplerate, sf.info(str(c)).channels) for c in converted} == {(16000, 1)}
    assert abs(sf.info(str(converted[0])).duration - 1.2) < 0.01
    again = [convert_audio(s, 16000, tmp_path / f"{s.stem}-again.wav") for s in sources]
    assert [a.read_bytes() for a in again] == [c.read_bytes() for c in converted]  # no random dither
    results = model.transcribe(sources)
    assert [r.error for r in results] == [None] * 3
    assert [r.text for r in results] == reference_transcripts(assets["model"], assets["lm"], SETTINGS, converted,
                                                              tmp_path)
    # the rate comes from the checkpoint: an 8 kHz model gets 8 kHz audio
    assert prepare_audio(assets["audio"] / "tone.wav", 8000, tmp_path).shape == (8000,)
    pkg8 = package_model(tmp_path / "pkg8", make_checkpoint(tmp_path / "m8.pt", sample_rate=8000), assets["lm"],
                         SETTINGS)
    m8 = load_transcriber(pkg8)
    assert m8.sample_rate == 8000 and m8.transcribe([assets["audio"] / "tone.wav"])[0].error is None


def test_bad_files_get_errors_and_the_rest_is_transcribed(assets, tmp_path):
    a = assets["audio"]
    paths = [a / "tone.wav", a / "empty.wav", a / "notes.wav", a / "gone.wav", a, a / "blip.wav", a / "speech.flac"]
    results = load_transcriber(assets["pkg"]).transcribe(paths)
    assert [r.path for r in results] == [str(p) for p in paths]
    ok = [r for r in results if r.ok]
    assert [r.path for r in ok] == [str(paths[0]), str(paths[-1])]
    assert [r.text for r in ok] == reference_transcripts(assets["model"], assets["lm"], SETTINGS,
                                                         [paths[0], paths[-1]], tmp_path)
    assert all(r.error.startswith(f"{r.path}: ") and r.text is None for r in results if not r.ok)  # names its file
    errors = {Path(r.path).name: r.error for r in results if not r.ok}
    assert "empty file (0 bytes)" in errors["empty.wav"]
    assert "not a readable audio file" in errors["notes.wav"] and "RIFF header not found" in errors["notes.wav"]
    assert "no such file" in errors["gone.wav"]
    assert "is a directory" in errors["audio"]
    assert "too short (160 samples" in errors["blip.wav"]


def test_cli_prints_good_files_in_order_and_reports_bad_ones(assets):
    a = assets["audio"]
    files = ["tone.wav", "empty.wav", "notes.wav", "gone.wav", "speech.flac"]
    proc = subprocess.run([str(REPO / ".venv/bin/asrflow"), "transcribe", *files, "--model", str(assets["pkg"])],
                          cwd=a, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k not in ("ASRFLOW_MODEL", "MLFLOW_TRACKING_URI")})
    assert proc.returncode == 1, proc.stderr
    expected = load_transcriber(assets["pkg"]).transcribe([a / "tone.wav", a / "speech.flac"])
    assert proc.stdout.splitlines() == [f"tone.wav\t{expected[0].text}", f"speech.flac\t{expected[1].text}"]
    err = proc.stderr.splitlines()
    assert err == [line for line in err if line.startswith("asrflow transcribe: ")], proc.stderr  # no MLflow chatter
    assert [line.split(": ")[1] for line in err] == ["empty.wav", "notes.wav", "gone.wav"]
    assert "empty file (0 bytes)" in err[0] and "not a readable audio file" in err[1] and "no such file" in err[2]


def unescape_tsv(field: bytes) -> bytes:
    r"""The file name bytes a TSV field of ``asrflow transcribe`` stands for, decoded here
    independently of the CLI's code: ``\\ \t \n \r`` named, ``\xXX`` a raw byte, ``\uXXXX`` a
    code point (UTF-8); any other backslash would make the output ambiguous, so it fails."""
    named = {b"\\": b"\\", b"t": b"\t", b"n": b"\n", b"r": b"\r"}

    def one(m: re.Match[bytes]) -> bytes:
        s = m.group(1)
        if s in named:
            return named[s]
        return bytes([int(s[1:], 16)]) if s[:1] == b"x" else chr(int(s[1:], 16)).encode()

    out = re.sub(rb"\\(\\|t|n|r|x[0-9a-f]{2}|u[0-9a-f]{4})", one, field)
    assert b"\\" not in re.sub(rb"\\(\\|t|n|r|x[0-9a-f]{2}|u[0-9a-f]{4})", b"", field), field
    return out


def test_cli_output_cannot_be_forged_by_file_names(assets, tmp_path):
    """A file name holding a tab, a newline, a carriage return, a backslash sequence that looks
    like an escape, a Unicode line separator or bytes that are not UTF-8 (each a real file, a
    copy of speech.flac) comes back, in both --format tsv and --format jsonl, as exactly one
    record per file with exactly its own name; a missing file whose name forges a stderr line
    gets one stderr line (and its jsonl row with the error)."""
    src = (assets["audio"] / "speech.flac").read_bytes()
    names = [b"tab\there.flac", b"new\nline.flac", b"x.flac\tforged transcript\nfake.flac", b"cr\r.flac",
             b"back\\nslash\\t.flac", b"sep\xe2\x80\xa8.flac", b"caf\xe9.flac"]
    for n in names:
        with open(os.path.join(os.fsencode(tmp_path), n), "wb") as f:
            f.write(src)
    gone = b"gone.flac\nasrflow transcribe: forged.flac: no such file"
    args = [*names[:3], gone, *names[3:]]
    expected = load_transcriber(assets["pkg"]).transcribe([assets["audio"] / "speech.flac"])[0].text
    env = {k: v for k, v in os.environ.items() if k not in ("ASRFLOW_MODEL", "MLFLOW_TRACKING_URI")}
    out = {}
    for fmt in ("tsv", "jsonl"):
        proc = subprocess.run([str(REPO / ".venv/bin/asrflow").encode(), b"transcribe", *args, b"--format",
                               fmt.encode(), b"--model", bytes(assets["pkg"])],
                              cwd=tmp_path, capture_output=True, timeout=120, env=env)
        assert proc.returncode == 1, proc.stderr.decode(errors="replace")
        err = proc.stderr.decode("ascii", errors="strict").split("\n")  # escaped: ASCII here, no U+2028
        assert err[-1] == "" and len(err) == 2 and err[0].startswith("asrflow transcribe: gone.flac\\nasrflow "), err
        assert "no such file" in err[0]
        out[fmt] = proc.stdout
    # tsv: one line per transcribed file, one tab each, the name's exact bytes after unescaping
    lines = out["tsv"].split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == len(names), out["tsv"]
    assert [line.count(b"\t") for line in lines[:-1]] == [1] * len(names)
    assert [unescape_tsv(line.split(b"\t")[0]) for line in lines[:-1]] == names
    assert {line.split(b"\t")[1].decode() for line in lines[:-1]} == {expected}
    # jsonl: one object per input, the failed one included
    rows = [json.loads(line) for line in out["jsonl"].decode("ascii").split("\n")[:-1]]
    assert [os.fsencode(r["path"]) for r in rows] == args
    assert [(r["text"], r["error"]) for r in rows if os.fsencode(r["path"]) != gone] == [(expected, None)] * len(names)
    failed = next(r for r in rows if os.fsencode(r["path"]) == gone)
    assert failed["text"] is None and "no such file" in failed["error"]


def test_registered_model_loads_by_uri_and_from_the_cli(assets, tmp_path, tracking, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.create_experiment("asrflow-serving-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(assets["pkg"]), "model")
    client.set_terminated(run.info.run_id)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "asrflow-test")
    assert str(version.version) == "1"
    client.set_registered_model_alias("asrflow-test", "champion", "1")

    wav = assets["audio"] / "tone.wav"
    expected = load_transcriber(assets["pkg"]).transcribe([wav])[0].text
    for model_uri in ("models:/asrflow-test/1", "models:/asrflow-test@champion", f"runs:/{run.info.run_id}/model"):
        assert load_transcriber(model_uri).transcribe([wav])[0].text == expected, model_uri
    with pytest.raises(ModelLoadError, match="models:/asrflow-test/7"):
        load_transcriber("models:/asrflow-test/7")

    # the CLI: --model from $ASRFLOW_MODEL, the store from --tracking-uri
    capsys.readouterr()
    monkeypatch.setenv("ASRFLOW_MODEL", "models:/asrflow-test/1")
    assert main(["transcribe", str(wav), "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out == f"{wav}\t{expected}\n"


def test_cli_usage_errors_say_what_to_pass(tmp_path, tracking, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no mlruns/mlflow.db here
    assert main(["transcribe", "a.wav"]) == 2
    assert "--model PATH_OR_URI" in capsys.readouterr().err
    assert main(["transcribe", "a.wav", "--model", "models:/asrflow-test/1"]) == 2
    assert "--tracking-uri" in capsys.readouterr().err
    assert main(["transcribe", "a.wav", "--model", "models:/x/1", "--tracking-uri", "sqlite:///nope.db"]) == 2
    assert "nope.db does not exist" in capsys.readouterr().err and not (tmp_path / "nope.db").exists()
    assert main(["transcribe", "a.wav", "--model", str(tmp_path / "missing-pkg")]) == 2
    assert f"{tmp_path / 'missing-pkg'} does not exist" in capsys.readouterr().err
    assert main(["transcribe", "a.wav", "--model", str(tmp_path)]) == 2
    assert "no MLmodel file" in capsys.readouterr().err

"""`asrflow export`: the acoustic model as ONNX, run by ONNX Runtime.

Real parts: a seeded DeepSpeech2 checkpoint packaged as the register stage packages it,
KenLM files built by lmplz, espeak-ng speech, torch's ONNX exporter, ONNX Runtime and the
flashlight beam search. (The trained model on the test split: tests/test_e2e.py.)
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from asrflow.cli import main
from asrflow.data.audio import prepare_audio
from asrflow.serve.export import TOLERANCE, OnnxTranscriber, normalised_model, export_onnx
from asrflow.serve.loading import load_transcriber
from asrflow.serve.package import package_model
from serve_fixtures import FREE, SETTINGS, make_checkpoint, make_lm, sox


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    lm = make_lm(d / "lm")
    model = make_checkpoint(d / "model.pt")
    subprocess.run(["espeak-ng", "-w", str(d / "speech22k.wav"), "the cat sat on the mat"], check=True)
    sox(str(d / "speech22k.wav"), "-r", "16000", "-c", "1", str(d / "speech.flac"))
    sox("-n", "-r", "44100", "-c", "2", "-b", "16", str(d / "stereo44k.wav"), "synth", "1.2", "sine", "300-3000")
    return {"dir": d, "pkg": package_model(d / "pkg", model, lm, SETTINGS), "model": model, "lm": lm,
            "audio": [d / "speech.flac", d / "stereo44k.wav"]}


def test_export_computes_what_pytorch_does_and_transcribes_the_same(packaged, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert main(["export", "--model", str(packaged["pkg"]), "--out", str(out)]) == 0
    assert "ONNX Runtime vs PyTorch log-probs differ by at most" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["acoustic.onnx", "decoder.json", "export.json", "frontend.json",
                                                     "lexicon.txt", "lm.bin", "tokens.json"]
    meta = json.loads((out / "export.json").read_text())
    assert meta["check_max_abs_diff"] <= TOLERANCE and meta["opset"] == 17
    front = json.loads((out / "frontend.json").read_text())
    assert (front["sample_rate"], front["n_fft"]) == (16000, 512) and "reflect" in front["recipe"]
    torch_model, onnx_model = load_transcriber(packaged["pkg"]), load_transcriber(out)
    assert isinstance(onnx_model, OnnxTranscriber) and not isinstance(torch_model, OnnxTranscriber)
    for path in packaged["audio"]:  # resampled and downmixed by the same front door
        wav = prepare_audio(str(path), 16000, str(tmp_path))
        want, got = torch_model.logprobs(wav), onnx_model.logprobs(wav)
        assert got.shape == want.shape and np.abs(got - want).max() <= TOLERANCE, path
    # a padded batch too (the graph's batch and frame axes are dynamic), as PyTorch computes it
    feats = np.random.default_rng(1).standard_normal((3, 120, 40)).astype(np.float32)
    lengths = np.array([120, 77, 31])
    got, got_len = onnx_model.session.run(None, {"features": feats, "lengths": lengths})
    with torch.inference_mode():
        want, want_len = normalised_model(torch_model.model, torch_model.mean, torch_model.std)(
            torch.from_numpy(feats), torch.from_numpy(lengths))
    assert got_len.tolist() == want_len.tolist() and np.abs(got - want.numpy()).max() <= TOLERANCE
    assert [r.text for r in onnx_model.transcribe(packaged["audio"])] == \
        [r.text for r in torch_model.transcribe(packaged["audio"])]
    # the command line takes the export as a model, as it takes a package
    assert main(["transcribe", "--model", str(out), str(packaged["audio"][0])]) == 0
    line = capsys.readouterr().out.strip()
    assert line == f"{packaged['audio'][0]}\t{torch_model.transcribe(packaged['audio'][:1])[0].text}"


def test_export_of_a_lexicon_free_package_carries_the_character_lm(packaged, tmp_path):
    free = package_model(tmp_path / "free", packaged["model"], packaged["lm"], FREE)
    export_onnx(free, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "acoustic.onnx", "char.bin", "decoder.json", "export.json", "frontend.json", "tokens.json"]
    assert load_transcriber(tmp_path / "out").transcribe(packaged["audio"][:1])[0].ok


def test_a_bad_model_or_a_damaged_export_is_a_clear_error(packaged, tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert f"model directory {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    out = tmp_path / "onnx"
    export_onnx(packaged["pkg"], out)
    (out / "acoustic.onnx").write_bytes(b"not a protobuf")
    assert main(["transcribe", "--model", str(out), str(packaged["audio"][0])]) == 2
    err = capsys.readouterr().err
    assert f"cannot load model {out}: InvalidProtobuf" in err and "acoustic.onnx failed" in err, err

"""Streaming recognition (asrflow.serve.streaming) against the offline model: a unidirectional
DeepSpeech2 pushed chunk by chunk gives the offline log-probs and transcript; real parts
(seeded checkpoints, lmplz-built KenLM, espeak-ng speech)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from asrflow.data.audio import prepare_audio
from asrflow.serve.loading import load_transcriber
from asrflow.serve.package import package_model
from asrflow.serve.streaming import IncrementalAcoustic, IncrementalStream, RedecodeStream, open_stream
from serve_fixtures import SETTINGS, make_checkpoint, make_lm, sox


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("streaming")
    subprocess.run(["espeak-ng", "-w", str(d / "s22k.wav"), "the cat sat on the mat and the dog sat on the log"],
                   check=True)
    sox(str(d / "s22k.wav"), "-r", "16000", "-c", "1", str(d / "s.wav"))
    return {"dir": d, "lm": make_lm(d / "lm"), "wav": prepare_audio(d / "s.wav", 16000, d)}


@pytest.mark.parametrize("lookahead", [0, 3])
@pytest.mark.parametrize("chunk", [1600, 4000, 1234])
def test_a_unidirectional_model_streams_to_the_offline_result(speech, lookahead, chunk, tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", seed=lookahead, bidirectional=False, lookahead=lookahead,
                           rnn_layers=2)
    model = load_transcriber(package_model(tmp_path / "pkg", ckpt, speech["lm"], SETTINGS))
    wav = speech["wav"]
    offline = model.logprobs(wav)
    acoustic = IncrementalAcoustic(model)
    pieces = [acoustic.push(wav[i:i + chunk]) for i in range(0, len(wav), chunk)]
    assert sum(p.shape[0] for p in pieces[:-1]) > 0.8 * offline.shape[0]  # settled as the audio came
    streamed = np.concatenate([*pieces, acoustic.push(wav[:0], final=True)])
    assert streamed.shape == offline.shape and np.abs(streamed - offline).max() < 1e-4
    stream = open_stream(model)
    assert isinstance(stream, IncrementalStream)
    partials = []
    for i in range(0, len(wav), chunk):
        stream.push(wav[i:i + chunk])
        partials.append(stream.partial())
    text, words, frames = stream.finish()
    want_text, want_words = model.search.decode_aligned(offline)
    assert (text, frames) == (want_text, offline.shape[0])
    assert [(w.word, w.first_frame, w.last_frame) for w in words] == \
        [(w.word, w.first_frame, w.last_frame) for w in want_words]
    assert [w.confidence for w in words] == pytest.approx([w.confidence for w in want_words], abs=1e-4)
    assert all(isinstance(p, str) for p in partials)  # (a random model's are mostly empty: see test_hotwords)


def test_a_bidirectional_model_re_decodes(speech, tmp_path):
    model = load_transcriber(package_model(tmp_path / "pkg", make_checkpoint(tmp_path / "m.pt"), speech["lm"],
                                           SETTINGS))
    stream = open_stream(model)
    assert isinstance(stream, RedecodeStream)
    stream.push(speech["wav"])
    assert stream.finish()[:2] == model.search.decode_aligned(model.logprobs(speech["wav"]))
    with pytest.raises(ValueError, match="bidirectional"):
        IncrementalAcoustic(model)

import pickle
import subprocess

import jsonschema
import numpy as np
import pytest
import soundfile as sf
import torch

from asrflow.features.augment import Augmenter, utterance_rng
from asrflow.features.augment_config import SCHEMA, AugmentConfig, NoiseStep, SpecAugmentStep

SR = 16000
EXAMPLE = [
    {"type": "speed", "prob": 0.0, "factors": [0.9, 1.0, 1.1]},
    {"type": "volume", "prob": 0.0, "gain_db": [-6.0, 6.0]},
    {"type": "shift", "prob": 0.0, "max_ms": 50},
    {"type": "noise", "prob": 0.0, "dir": None, "snr_db": [10.0, 30.0]},
    {"type": "specaugment", "prob": 0.0, "freq_masks": 2, "freq_width": 15, "time_masks": 2, "time_width": 40,
     "time_max_frac": 0.2},
]


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """A sox-synthesised 440 Hz tone and an espeak-ng utterance, both mono 16 kHz float32."""
    d = tmp_path_factory.mktemp("audio")
    subprocess.run(["sox", "-n", "-r", str(SR), "-c", "1", str(d / "tone.wav"), "synth", "2", "sine", "440",
                    "vol", "0.3"], check=True)
    subprocess.run(["espeak-ng", "-w", str(d / "raw.wav"), "the quick brown fox jumps over the lazy dog"], check=True)
    subprocess.run(["sox", str(d / "raw.wav"), "-r", str(SR), "-c", "1", str(d / "speech.wav")], check=True)
    tone, sr1 = sf.read(d / "tone.wav", dtype="float32")
    speech, sr2 = sf.read(d / "speech.wav", dtype="float32")
    assert sr1 == sr2 == SR and len(speech) > SR
    speech = (speech * (0.4 / np.abs(speech).max())).astype(np.float32)  # peak 0.4: no clipping at +6 dB
    return {"tone": tone, "speech": speech}


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory):
    """A long and a short (looped) white-noise file at 16 kHz and a stereo 8 kHz one (resampled)."""
    d = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(7)
    sf.write(d / "long.wav", rng.normal(0, 0.1, 5 * SR).astype(np.float32), SR)
    (d / "sub").mkdir()
    sf.write(d / "sub" / "short.flac", rng.normal(0, 0.05, SR // 4).astype(np.float32), SR)
    sf.write(d / "stereo8k.wav", rng.normal(0, 0.1, (8000, 2)).astype(np.float32), 8000)
    (d / "README.txt").write_text("not audio, ignored")
    return d


def aug(*steps, root=None):
    """An Augmenter of ``steps``, each step's unlisted keys taken from EXAMPLE (params.yaml's list)."""
    full = [{**next(e for e in EXAMPLE if e["type"] == s["type"]), **s} for s in steps]
    return Augmenter(AugmentConfig.from_params(full, root=root), SR)


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[spec.argmax()])


def test_zero_probabilities_and_empty_config_are_exact_noops(audio):
    for entries in (EXAMPLE, [], None):
        cfg = AugmentConfig.from_params(entries)
        a = Augmenter(cfg, SR)
        assert not cfg.enabled and not a.enabled
        rng = np.random.default_rng(0)
        before = rng.bit_generator.state
        wav, feats = audio["speech"], torch.randn(50, 80)
        assert a.wave(wav, rng) is wav and a.spec(feats, rng) is feats
        assert rng.bit_generator.state == before  # no draws at all
    cfg = AugmentConfig.from_params(EXAMPLE)
    assert AugmentConfig.from_params(cfg.to_params()) == cfg
    assert [s["type"] for s in cfg.to_params()] == [e["type"] for e in EXAMPLE]
    assert aug({"type": "volume", "prob": 0.5}).enabled


@pytest.mark.parametrize("factor", [1.1, 0.9])
def test_speed_changes_duration_and_pitch(audio, factor):
    tone = audio["tone"]
    out = aug({"type": "speed", "prob": 1.0, "factors": [factor]}).wave(tone, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.abs(out).max() <= 1.0
    assert abs(len(out) - len(tone) / factor) <= 1
    assert peak_hz(tone) == pytest.approx(440, abs=1.0)
    assert peak_hz(out) == pytest.approx(440 * factor, abs=1.5)
    same = aug({"type": "speed", "prob": 1.0, "factors": [1.0]})
    assert same.wave(tone, np.random.default_rng(0)) is tone


def test_volume_gain_in_db(audio):
    wav = audio["speech"]
    out = aug({"type": "volume", "prob": 1.0, "gain_db": [6.0, 6.0]}).wave(wav, np.random.default_rng(0))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, wav * 10 ** (6 / 20), rtol=1e-6, atol=1e-7)
    assert np.abs(out).max() == pytest.approx(0.4 * 1.995, rel=1e-3)
    loud = aug({"type": "volume", "prob": 1.0, "gain_db": [20.0, 20.0]}).wave(wav, np.random.default_rng(0))
    assert np.abs(loud).max() == 1.0  # clipped
    a = aug({"type": "volume", "prob": 1.0, "gain_db": [-6.0, 6.0]})
    gains = [20 * np.log10(np.abs(a.wave(wav, np.random.default_rng(s))).max() / 0.4) for s in range(30)]
    assert -6.0 - 1e-4 <= min(gains) < -2 and 2 < max(gains) <= 6.0 + 1e-4


def test_shift_moves_and_zero_fills(audio):
    wav = audio["speech"]
    a = aug({"type": "shift", "prob": 1.0, "max_ms": 50})
    shifts = set()
    for seed in range(20):
        out = a.wave(wav, np.random.default_rng(seed))
        assert len(out) == len(wav) and out.dtype == np.float32
        if out is wav:
            shifts.add(0)
            continue
        k = next(k for k in range(-800, 801) if k and np.array_equal(out[max(k, 0):len(out) + min(k, 0)],
                                                                     wav[max(-k, 0):len(wav) + min(-k, 0)]))
        assert (out[:k] == 0).all() if k > 0 else (out[k:] == 0).all()
        shifts.add(k)
    assert all(abs(k) <= 800 for k in shifts)  # 50 ms at 16 kHz
    assert min(shifts) < -100 and max(shifts) > 100


def test_noise_mixed_at_drawn_snr(audio, noise_dir):
    wav = audio["speech"]
    a = aug({"type": "noise", "prob": 1.0, "dir": str(noise_dir), "snr_db": [15.0, 15.0]})
    step = a.cfg.steps[0]
    assert isinstance(step, NoiseStep) and [p.split("/")[-1] for p in step.files] == \
        ["long.wav", "stereo8k.wav", "short.flac"]
    for seed in range(12):  # covers all three files (long, resampled stereo, looped short)
        out = a.wave(wav, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.shape == wav.shape
        snr = 10 * np.log10(np.mean(wav.astype(np.float64) ** 2) / np.mean((out - wav).astype(np.float64) ** 2))
        assert snr == pytest.approx(15.0, abs=0.5)
    assert len(a._noise_cache) == 3 and len(a._noise_cache[step.files[1]]) == SR  # 1 s at 8 kHz -> 16 kHz
    # relative dir resolved against root; a drawn SNR within its range
    b = aug({"type": "noise", "prob": 1.0, "dir": noise_dir.name, "snr_db": [5.0, 25.0]}, root=noise_dir.parent)
    out = b.wave(wav, np.random.default_rng(3))
    snr = 10 * np.log10(np.mean(wav.astype(np.float64) ** 2) / np.mean((out - wav).astype(np.float64) ** 2))
    assert 4.5 <= snr <= 25.5


def runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def test_specaugment_masks(audio):
    a = aug({"type": "specaugment", "prob": 1.0, "freq_masks": 2, "freq_width": 15, "time_masks": 2,
             "time_width": 40, "time_max_frac": 0.2})
    widths_f, widths_t = [], []
    for seed, frames in [(s, 300 if s % 2 else 60) for s in range(40)]:
        feats = torch.randn(frames, 80, generator=torch.Generator().manual_seed(seed)) + 10  # no zeros
        orig = feats.clone()
        out = a.spec(feats, np.random.default_rng(seed)).numpy()
        assert torch.equal(feats, orig)  # input untouched
        zero = out == 0
        cols, rows = zero.all(0), zero.all(1)
        assert (zero == (cols[None, :] | rows[:, None])).all()  # every zero is in a masked band/frame
        assert (out[~zero] == orig.numpy()[~zero]).all()  # the rest unchanged
        fr, tr = runs(cols), runs(rows)
        assert len(fr) <= 2 and sum(fr) <= 30 and len(tr) <= 2
        assert sum(tr) <= 2 * min(40, int(0.2 * frames))  # 20% of the utterance per mask
        if len(fr) == 2:
            assert max(fr) <= 15
            widths_f += fr
        if len(tr) == 2:
            assert max(tr) <= min(40, int(0.2 * frames))
            widths_t += tr
    assert 4 < np.mean(widths_f) < 11 and max(widths_f) >= 12  # uniform in [0, 15]
    assert max(widths_t) > 30
    # single masks: exact count and widths
    b = aug({"type": "specaugment", "prob": 1.0, "freq_masks": 1, "freq_width": 8, "time_masks": 0,
             "time_width": 40, "time_max_frac": 0.2})
    out = b.spec(torch.ones(100, 40), np.random.default_rng(1))
    assert (out == 0).all(0).sum() <= 8 and not (out == 0).all(1).any()
    assert isinstance(b.cfg.steps[0], SpecAugmentStep) and b.cfg.steps[0].time_max_frac == 0.2


def full_config(noise_dir):
    return AugmentConfig.from_params([
        {"type": "speed", "prob": 0.8, "factors": [0.9, 1.0, 1.1]},
        {"type": "volume", "prob": 0.8, "gain_db": [-6.0, 6.0]},
        {"type": "shift", "prob": 0.8, "max_ms": 50},
        {"type": "noise", "prob": 0.8, "dir": str(noise_dir), "snr_db": [10.0, 30.0]},
        {"type": "specaugment", "prob": 0.8, "freq_masks": 2, "freq_width": 15, "time_masks": 2, "time_width": 40,
         "time_max_frac": 0.2},
    ])


def test_determinism_per_utterance_rng(audio, noise_dir):
    a = Augmenter(full_config(noise_dir), SR)
    wav, feats = audio["speech"], torch.randn(200, 80)

    def go(augmenter, rng):
        return augmenter.wave(wav, rng), augmenter.spec(feats, rng)

    w1, f1 = go(a, utterance_rng(1, 2, 3))
    w2, f2 = go(pickle.loads(pickle.dumps(a)), utterance_rng(1, 2, 3))  # a fresh worker's copy
    assert np.array_equal(w1, w2) and torch.equal(f1, f2)
    outs = [go(a, utterance_rng(1, 2, i)) for i in range(4, 8)] + [go(a, utterance_rng(1, 3, 3))]
    assert all(not (w.shape == w1.shape and np.array_equal(w, w1)) for w, _ in outs)
    assert any(not torch.equal(f, f1) for _, f in outs)
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    go(a, utterance_rng(0, 0, 0))
    assert torch.equal(torch.get_rng_state(), torch_state) and np.array_equal(np.random.get_state()[1], np_state)
    with pytest.raises(ValueError, match="index"):
        utterance_rng(1, 0, -1)


@pytest.mark.parametrize("i,entry,needles", [
    (0, {"type": "echo", "prob": 0.1}, ["type='echo'", "unknown step type"]),
    (0, {"prob": 0.1}, ["type=None"]),
    (1, {"type": "volume", "prob": 0.1, "gain": [1, 2]}, ["(volume)", "unknown key 'gain'"]),
    (1, {"type": "shift", "max_ms": 5}, ["missing key 'prob'"]),
    (1, {"type": "shift", "prob": 1.5}, ["prob=1.5", "<= 1.0"]),
    (1, {"type": "shift", "prob": -0.1}, ["prob=-0.1"]),
    (1, {"type": "shift", "prob": True}, ["prob=True"]),
    (1, {"type": "volume", "prob": 0.1, "gain_db": [6, -6]}, ["gain_db=[6, -6]", "reversed range"]),
    (1, {"type": "noise", "prob": 0.0, "snr_db": [30, 10]}, ["(noise)", "snr_db=[30, 10]", "reversed"]),
    (1, {"type": "speed", "prob": 0.1, "factors": [0.9, 0.0]}, ["factors=[0.9, 0.0]", "> 0"]),
    (1, {"type": "speed", "prob": 0.1, "factors": [-1.1]}, ["factors=[-1.1]"]),
    (1, {"type": "speed", "prob": 0.1, "factors": []}, ["factors=[]"]),
    (1, {"type": "shift", "prob": 0.1, "max_ms": -5}, ["max_ms=-5"]),
    (1, {"type": "specaugment", "prob": 0.1, "freq_width": 2.5}, ["freq_width=2.5"]),
    (1, {"type": "specaugment", "prob": 0.1, "time_max_frac": 0}, ["time_max_frac=0"]),
    (1, {"type": "noise", "prob": 0.5, "dir": None}, ["(noise)", "prob=0.5", "dir"]),
    (1, "speed", ["expected a mapping"]),
])
def test_validation_errors_name_entry_and_key(i, entry, needles):
    entries = [{"type": "volume", "prob": 0.0, "gain_db": [-6, 6]}] * i + [entry]
    with pytest.raises(ValueError) as e:
        AugmentConfig.from_params(entries)
    msg = str(e.value)
    assert f"train.augment[{i}]" in msg and all(n in msg for n in needles), msg


def test_noise_dir_validation(tmp_path):
    def err(d):
        with pytest.raises(ValueError) as e:
            AugmentConfig.from_params([{"type": "volume", "prob": 0.0, "gain_db": [-6, 6]},
                                       {"type": "noise", "prob": 0.2, "dir": d, "snr_db": [10, 30]}])
        assert "train.augment[1] (noise): dir=" in str(e.value)
        return str(e.value)

    assert "not a directory" in err(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert "no audio files" in err(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.wav").write_bytes(b"RIFF garbage")
    assert "broken.wav" in err(str(tmp_path / "bad"))
    # an inert noise step (prob 0) is not checked
    assert not AugmentConfig.from_params([{"type": "noise", "prob": 0.0, "dir": str(tmp_path / "x"),
                                                "snr_db": [10, 30]}]).enabled
    with pytest.raises(ValueError, match=r"^train\.augment: expected a list"):
        AugmentConfig.from_params({"type": "volume"})


def test_schema_fragment():
    v = jsonschema.Draft202012Validator(SCHEMA)
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert not list(v.iter_errors(EXAMPLE))
    assert not list(v.iter_errors([{"type": "noise", "prob": 1, "dir": "data/noise", "snr_db": [5, 20]}]))
    for bad in ([{"type": "volume", "prob": 0.1, "gain": [1, 2]}], [{"type": "echo", "prob": 0.1}],
                [{"type": "shift", "prob": 2}], [{"type": "speed", "prob": 0.1, "factors": [0]}],
                [{"type": "shift"}], [{"type": "specaugment", "prob": 0.1, "freq_masks": 1.5}], {"type": "shift"},
                [{"type": "shift", "prob": 0.1}]):  # every key listed
        assert list(v.iter_errors(bad)), bad

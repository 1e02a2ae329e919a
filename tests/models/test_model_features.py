import numpy as np
import pytest
import soundfile as sf
import torch

from asrflow.data.audio import load_audio
from asrflow.features.logmel import FeatureConfig, LogMel, compute_stats, num_frames
from asrflow.models.deepspeech2 import DeepSpeech2
from asrflow.models.families import count_parameters
from asrflow.train.batches import epoch_batches, make_batches
from conftest import config, model_config


def test_logmel_shape_and_stats(tmp_path):
    cfg = config(FeatureConfig, "features", n_mels=40)
    x = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    sf.write(tmp_path / "a.flac", x, 16000)
    feats = LogMel(cfg)(torch.from_numpy(x))
    assert feats.shape == (num_frames(16000, cfg), 40)
    s = compute_stats([load_audio(tmp_path / "a.flac", cfg.sample_rate)], cfg)
    assert len(s["mean"]) == 40 and s["frames"] == feats.shape[0] and min(s["std"]) > 0


def test_logmel_is_torchaudios_log_mel_spectrogram():
    """LogMel computes the power and applies the filterbank its own (faster) way: the features
    are still torchaudio's HTK log-mel spectrogram, for one waveform or a batch."""
    import torchaudio
    cfg = config(FeatureConfig, "features")
    x = torch.from_numpy(np.random.default_rng(3).normal(0, 0.1, (2, 20_800)).astype(np.float32))
    ref = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400, hop_length=160,
                                               n_mels=80, power=2.0)
    fe = LogMel(cfg)
    for wav in (x[0], x):
        want = torch.log(ref(wav) + 1e-6).transpose(-1, -2)
        got = fe(wav)
        assert got.shape == want.shape and got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_model_output_lengths_match():
    cfg = model_config(40, 30, conv_channels=4, rnn_layers=2, rnn_hidden=16, conv_strides=[[2, 2], [2, 1]])
    m = DeepSpeech2(cfg).eval()
    x = torch.randn(3, 101, 40)
    lens = torch.tensor([101, 80, 33])
    lp, out = m(x, lens)
    assert lp.shape[0] == 3 and lp.shape[2] == 30 and int(out[0]) == lp.shape[1]
    assert out.tolist() == [51, 40, 17]  # time stride 2
    assert torch.allclose(lp.exp().sum(-1), torch.ones(lp.shape[:2]), atol=1e-5)
    assert count_parameters(m) > 0


def test_batches_cover_each_utterance_once_per_epoch():
    durs = list(np.random.default_rng(1).uniform(1, 10, 101))
    batches = make_batches(durs, 40.0)
    assert sorted(i for b in batches for i in b) == list(range(101))
    assert all(max(durs[i] for i in b) * len(b) <= 40.0 or len(b) == 1 for b in batches)
    e0 = epoch_batches(batches, 0, 7, 0, 1)
    assert e0 == batches  # SortaGrad: first epoch in duration order
    assert epoch_batches(batches, 1, 7, 0, 1) != batches
    for world in (2, 3, 4):
        for epoch in (0, 1):
            ranks = [epoch_batches(batches, epoch, 7, r, world) for r in range(world)]
            assert len({len(r) for r in ranks}) == 1  # same number of steps on every rank
            seen = sorted(i for r in ranks for b in r for i in b)
            assert seen == list(range(101))  # each utterance exactly once per epoch, none dropped


def _family(**kw) -> DeepSpeech2:
    torch.manual_seed(0)
    return DeepSpeech2(model_config(16, 10, **{"conv_channels": 4, "conv_strides": [(2, 1)], "rnn_layers": 2,
                                               "rnn_hidden": 8, "dropout": 0.0, **kw})).eval()


def test_model_family_gru_lstm_directions_and_lookahead():
    sizes = {name: count_parameters(_family(**kw)) for name, kw in {
        "bigru": {"rnn_type": "gru"}, "bilstm": {"rnn_type": "lstm"},
        "unigru": {"rnn_type": "gru", "bidirectional": False},
        "unigru_la": {"rnn_type": "gru", "bidirectional": False, "lookahead": 4}}.items()}
    assert sizes["bilstm"] > sizes["bigru"] > sizes["unigru"]            # LSTM has 4 gates, GRU 3
    assert sizes["unigru_la"] - sizes["unigru"] == 8 * 5                   # depthwise conv: width x (lookahead+1)
    x, lens = torch.randn(2, 40, 16), torch.tensor([40, 31])
    for kw in ({"rnn_type": "lstm"}, {"rnn_type": "gru"}, {"bidirectional": False, "lookahead": 4}):
        lp, olen = _family(**kw)(x, lens)
        assert lp.shape == (2, 40, 10) and olen.tolist() == [40, 31]


def test_unidirectional_model_sees_only_lookahead_future_frames():
    """Output frame t of a unidirectional model with lookahead L depends on input frames up to
    t + L (plus the conv front end's half kernel), never further; a bidirectional one sees all."""
    x = torch.randn(1, 60, 16)
    changed = x.clone()
    changed[:, 40:] += 5.0                                  # change the future from frame 40 on
    lens = torch.tensor([60])
    with torch.no_grad():
        uni = _family(bidirectional=False, lookahead=4)
        a, b = uni(x, lens)[0], uni(changed, lens)[0]
        reach = 40 - 4 - 2                                   # lookahead 4, time kernel 5 (half = 2)
        assert torch.equal(a[:, :reach], b[:, :reach]) and not torch.equal(a[:, reach:], b[:, reach:])
        bi = _family()
        assert not torch.equal(bi(x, lens)[0][:, :10], bi(changed, lens)[0][:, :10])


def test_epoch_coverage_check_raises_on_a_dropped_or_repeated_utterance():
    from asrflow.train.distributed import check_epoch_coverage

    check_epoch_coverage([2, 0, 1], 3, world=1, epoch=0)
    for seen in ([0, 1], [0, 1, 1], [0, 1, 2, 2]):
        with pytest.raises(RuntimeError, match="expected each of 3 exactly once"):
            check_epoch_coverage(seen, 3, world=1, epoch=0)

"""A small packaged recognizer for the serving and model-package tests: a seeded
DeepSpeech2 checkpoint in train.py's layout, KenLM models built by lmplz, and the
decoder settings to package them with."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch

from asrflow.features.logmel import FeatureConfig
from asrflow.models.deepspeech2 import DeepSpeech2
from asrflow.serve.settings import DecoderSettings
from asrflow.text.lm import LMConfig, build_lm
from asrflow.text.vocab import BLANK, SPACE
from conftest import config, model_config

TOKENS = [BLANK, SPACE] + list("abcdefghijklmnopqrstuvwxyz'")
SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a cat ate the rat", "hello world",
             "the world is round", "hello there cat"] * 5
SETTINGS = DecoderSettings(alpha=0.5, beta=1.0, beam_size=8, beam_threshold=25.0, token_beam=0, mode="lexicon")
FREE = DecoderSettings(alpha=0.3, beta=0.5, beam_size=8, beam_threshold=25.0, token_beam=0, mode="lexicon_free")


def sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True)


def make_checkpoint(path: Path, sample_rate: int = 16000, seed: int = 0, **model) -> Path:
    """A randomly initialised (seeded) small model, saved with the dict layout train.py writes;
    ``model``: train-block overrides (``bidirectional=False, lookahead=2``: a streamable one)."""
    torch.manual_seed(seed)
    feat = config(FeatureConfig, "features", sample_rate=sample_rate, n_mels=40)
    mcfg = model_config(40, len(TOKENS), **{"conv_channels": 4, "rnn_layers": 1, "rnn_hidden": 32,
                                            "conv_strides": [[2, 2], [2, 1]], **model})
    model = DeepSpeech2(mcfg)
    rng = np.random.default_rng(seed)
    ckpt = {"model_config": mcfg.to_dict(), "state_dict": model.state_dict(), "vocab": TOKENS,
            "stats": {"mean": rng.normal(-4, 1, 40).round(4).tolist(), "std": rng.uniform(1, 3, 40).round(4).tolist()},
            "features": feat.__dict__, "train": {}, "epoch": 1, "dev_cer": 100.0, "dev_wer": 100.0}
    torch.save(ckpt, path)
    return path


def make_lm(lm_dir: Path) -> Path:
    """Word 3-gram + lexicon and character 4-gram over :data:`SENTENCES`."""
    build_lm(SENTENCES, set(TOKENS[2:]), lm_dir, config(LMConfig, "lm", order=3, char_order=4))
    return lm_dir

"""bench_models' baseline is the DeepSpeech2 recipe it names, on today's params."""

import subprocess
import sys

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from bench_models import entry_params  # noqa: E402

from asrflow.pipeline.config import load_params  # noqa: E402
from asrflow.train.config import TrainConfig  # noqa: E402

#: the commit whose params.yaml the baseline reproduces (the last before model families)
AS_FILED = "056b638"
#: the DeepSpeech2 keys' names then -> now (the convs' shape moved under `subsampling`)
RENAMED = {"conv_kernel": ("subsampling", "kernel"), "conv_strides": ("subsampling", "strides")}


def test_the_as_filed_baseline_trains_deepspeech2_as_params_yaml_had_it():
    """Every model and training key of the old train block (epochs aside: the budget sets them)
    equals what the baseline trains with, so a later edit of today's defaults that the baseline
    would silently take up fails here."""
    shown = subprocess.run(["git", "show", f"{AS_FILED}:params.yaml"], cwd=REPO, capture_output=True, text=True)
    if shown.returncode:
        pytest.skip(f"commit {AS_FILED} is not in this clone's history: {shown.stderr.strip()}")
    old = yaml.safe_load(shown.stdout)["train"]
    p = entry_params("deepspeech2_as_filed", load_params(REPO / "params.yaml"), "synth")
    model, train = p["model"]["deepspeech2"], vars(TrainConfig.for_dataset(p, "synth"))
    assert p["model"]["family"] == "deepspeech2"
    compared = 0
    for key, value in old.items():
        if key in RENAMED:
            block, sub = RENAMED[key]
            assert model[block][sub] == value, key
        elif key in model:
            assert model[key] == value, key
        elif key in train and key != "epochs":
            assert train[key] == value, key
        else:
            continue
        compared += 1
    assert compared >= 20 and model["rnn_type"] == "gru" and train["lr"] == 0.0015
    # and today's DeepSpeech2 differs from it (else the baseline measures nothing)
    today = entry_params("deepspeech2", load_params(REPO / "params.yaml"), "synth")
    assert today["model"]["deepspeech2"] != model or vars(TrainConfig.for_dataset(today, "synth")) != train


def test_an_unknown_entry_is_refused():
    with pytest.raises(SystemExit, match="unknown family or baseline 'deepspeech3'"):
        entry_params("deepspeech3", load_params(REPO / "params.yaml"), "synth")

"""params.yaml as shipped; wrong and hostile params are tests/reliability/test_hostile_input.py."""

import copy
import json
import pickle

import pytest
import yaml

from asrflow.pipeline.config import (ParamsError, ParamsView, UndeclaredParamsRead, covers, dataset_splits,
                                     eval_splits, load_params, validate_params)
from conftest import REPO


def test_repo_params_are_valid():
    p = load_params(REPO / "params.yaml")
    assert p["dataset"] == "synth"
    assert eval_splits(p, "librispeech") == ["test-clean", "test-other"]


def test_config_types_have_no_defaults_of_their_own():
    """params.yaml is the one source of defaults: every config type is built from it and has
    no field default that could disagree with it."""
    import dataclasses

    from asrflow.data.manifest import ManifestConfig
    from asrflow.decode.beam import BeamConfig
    from asrflow.features.augment_config import STEP_CLASSES, AugmentConfig
    from asrflow.features.logmel import FeatureConfig
    from asrflow.models import families
    from asrflow.models.deepspeech2 import ModelConfig
    from asrflow.models.frames import frame_geometry
    from asrflow.serve.settings import DecoderSettings
    from asrflow.text.lm import LMConfig
    from asrflow.train.config import TrainConfig

    p = load_params(REPO / "params.yaml")
    built = {FeatureConfig: FeatureConfig.from_params(p["features"]), BeamConfig: BeamConfig.from_params(p["decode"]),
             LMConfig: LMConfig.from_params(p["lm"]), TrainConfig: TrainConfig.from_params(p["train"]),
             ManifestConfig: ManifestConfig.from_params(p, frame_geometry(p["model"]), "synth"),
             **{type(c): c for c in (families.family(f).config_from_params(p["model"][f], 80, 29) for f in families.FAMILIES)},
             DecoderSettings: DecoderSettings.from_dict({**p["decode"], "alpha": 1.0, "beta": 0.5})}
    steps = AugmentConfig.from_params(p["train"]["augment"]).steps
    assert sorted(s.type for s in steps) == sorted(STEP_CLASSES), "params.yaml lists every augmentation type"
    built.update({type(s): s for s in steps})
    for cls, cfg in built.items():
        with_default = [f.name for f in dataclasses.fields(cls) if f.name != "files"  # found, not a param
                        and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)]
        assert not with_default, f"{cls.__name__} has defaults of its own: {with_default}"
    assert built[TrainConfig].to_params() == p["train"]
    assert dataclasses.asdict(built[FeatureConfig]) == p["features"]
    assert dataclasses.asdict(built[BeamConfig]) == p["decode"]
    assert built[ManifestConfig].row_group_rows == p["manifest"]["row_group_rows"]
    assert built[ModelConfig].conv_strides == [tuple(s) for s in p["model"]["deepspeech2"]["subsampling"]["strides"]]


def test_params_view_records_the_keys_read_and_refuses_undeclared_ones():
    """A stage reads params.yaml through a ParamsView: reading a leaf records its key, reading
    a mapping as a whole records the mapping's key, and a key outside the declared ones stops
    the stage with the key's name before it computes anything with it."""
    p = load_params(REPO / "params.yaml")
    view = ParamsView(p, ("train", "decode.beam_size", "datasets.synth.splits", "evaluate"), "tune")
    assert view["decode"]["beam_size"] == p["decode"]["beam_size"]
    assert view.reads == ["decode.beam_size"]  # going through `decode` on the way records nothing
    assert dataset_splits(view, "synth") == p["datasets"]["synth"]["splits"]  # a deep copy: the whole mapping
    cfg = {**view["evaluate"]}  # ** reads every key of the block
    assert cfg == p["evaluate"] and type(cfg) is dict
    assert view.reads == ["datasets.synth.splits", "decode.beam_size", "evaluate"]
    with pytest.raises(UndeclaredParamsRead, match=r"stage 'tune' reads params key 'decode.mode', which the "
                                                    r"pipeline definition does not declare"):
        view["decode"]["mode"]
    with pytest.raises(UndeclaredParamsRead, match=r"'decode'"):  # iterating a block depends on all of it
        list(view["decode"])
    with pytest.raises(UndeclaredParamsRead, match=r"'lm.order'"):
        "order" in view["lm"]
    assert view.reads == ["datasets.synth.splits", "decode.beam_size", "evaluate"]  # refused reads are not recorded
    # what a stage keeps of it (a config in a checkpoint, a copy, a YAML dump) is a plain mapping
    train = view["train"]
    assert type(pickle.loads(pickle.dumps(train))) is dict and pickle.loads(pickle.dumps(train)) == p["train"]
    assert type(copy.deepcopy(train)) is dict and yaml.safe_load(yaml.safe_dump(train)) == p["train"]
    assert json.loads(json.dumps(train)) == p["train"]
    # the whole configuration for the record, not as a read
    assert view.unrecorded() == p and "mlflow" not in " ".join(view.reads)


def test_covers():
    assert covers(["train"], "train.lr") and covers(["train.lr"], "train.lr")
    assert not covers(["train.lr"], "train") and not covers(["train"], "trainer.x") and not covers([], "seed")


def test_a_dataset_trains_with_its_own_settings_over_the_train_block():
    """``train_per_dataset.<name>`` replaces the train block's keys it names, for that dataset
    only, and the train stage's read of it is recorded (DVC and Snakemake watch both)."""
    from asrflow.pipeline.definition import stage
    from asrflow.train.config import TrainConfig
    p = load_params(REPO / "params.yaml")
    assert set(p["train_per_dataset"]) == set(p["datasets"])
    p["train_per_dataset"]["synth_zh"] = {"epochs": 9, "lr": 0.001}
    view = ParamsView(p, tuple(stage("train").keys("synth_zh", p)), "train")
    zh = TrainConfig.for_dataset(view, "synth_zh")
    assert (zh.epochs, zh.lr, zh.batch_frames) == (9, 0.001, p["train"]["batch_frames"])
    assert view.reads == ["model.family", "train", "train_per_dataset.synth_zh", "train_per_family.deepspeech2"]
    assert TrainConfig.for_dataset(p, "synth").to_params() == {
        **p["train"], **p["train_per_family"]["deepspeech2"], **p["train_per_dataset"]["synth"]}
    assert list(zh.to_params()) == list(p["train"])  # the train block's key order, as checkpoints record it


def test_a_family_trains_with_its_own_settings_under_the_datasets():
    """``train_per_family.<family>`` replaces the train block's keys it names when that family
    is chosen; a dataset's own entry wins over it. Only the chosen family's entry is read."""
    from asrflow.pipeline.definition import stage
    from asrflow.train.config import TrainConfig
    p = load_params(REPO / "params.yaml")
    p["model"]["family"] = "quartznet"
    p["train_per_family"].update(quartznet={"lr": 0.02, "epochs": 7}, jasper={"lr": 0.5})
    p["train_per_dataset"]["synth"] = {"epochs": 9}
    p["train_per_dataset"]["synth_zh"] = {}
    view = ParamsView(p, tuple(stage("train").keys("synth", p)), "train")
    cfg = TrainConfig.for_dataset(view, "synth")
    assert (cfg.lr, cfg.epochs, cfg.batch_frames) == (0.02, 9, p["train"]["batch_frames"])
    assert view.reads == ["model.family", "train", "train_per_dataset.synth", "train_per_family.quartznet"]
    assert TrainConfig.for_dataset(p, "synth_zh").epochs == 7
    p["model"]["family"] = "deepspeech2"
    assert TrainConfig.for_dataset(p, "synth_zh").to_params() == {**p["train"], **p["train_per_family"]["deepspeech2"]}


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.pop("jasper"), "'train_per_family': 'jasper' is a required property"),
    (lambda f: f.update(wav2vec={}), "unknown key under 'train_per_family': 'wav2vec'"),
    (lambda f: f.update(jasper={"threads": 1}), "unknown key under 'train_per_family.jasper': 'threads'"),
    (lambda f: f.update(conformer={"augment": [{"type": "volume", "prob": -1, "gain_db": [0, 1]}]}),
     r"train_per_family.conformer.augment\[0\]"),
])
def test_a_family_entry_is_checked_like_a_datasets(edit, message):
    p = load_params(REPO / "params.yaml")
    edit(p["train_per_family"])
    with pytest.raises(ParamsError, match=message):
        validate_params(p)

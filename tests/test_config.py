import pytest
import yaml

from asrflow.config import ParamsError, eval_splits, load_params, validate_params
from conftest import REPO, tiny_params


def test_repo_params_are_valid():
    p = load_params(REPO / "params.yaml")
    assert p["dataset"] == "synth"
    assert eval_splits(p, "librispeech") == ["test-clean", "test-other"]


@pytest.mark.parametrize("mutate, words", [
    (lambda p: p["train"].update(epochz=3), ["unknown key", "train", "epochz", "epochs"]),
    (lambda p: p.update(extra=1), ["unknown key", "extra"]),
    (lambda p: p["train"].update(epochs="ten"), ["train.epochs", "'ten'", "integer"]),
    (lambda p: p["tune"].update(alpha=[2.0, 0.5]), ["tune.alpha", "min <= max"]),
    (lambda p: p["decode"].update(beam_size=-5), ["decode.beam_size", "-5"]),
    (lambda p: p.update(dataset="timit"), ["dataset", "timit", "synth", "librispeech"]),
    (lambda p: p["manifest"].update(min_duration=30.0), ["manifest.min_duration", "max_duration"]),
    (lambda p: p["decode"].update(mode="lexicon_free"), ["decode.mode", "lm.char_order"]),
    (lambda p: p["decode"].update(mode="words"), ["decode.mode", "lexicon_free"]),
    (lambda p: p["lm"].update(quantize={"pointer_bits": 22, "prob_bits": 8, "backoff_bits": 8}),
     ["lm.quantize", "trie"]),
    (lambda p: p["lm"].update(prune=[0, 2, 1]), ["lm.prune", "non-decreasing"]),
    (lambda p: p["lm"].update(prune=[1, 1, 1]), ["lm.prune", "starting with 0"]),
    (lambda p: p["lm"].update(char_order=9), ["lm.char_order"]),
    (lambda p: p["evaluate"].update(duration_bins=[0, 5, 5, 10]), ["evaluate.duration_bins", "increase"]),
    (lambda p: p["evaluate"].update(duration_bins=[1, 5]), ["evaluate.duration_bins", "start at 0"]),
    (lambda p: p["evaluate"].update(duration_bins=[]), ["evaluate.duration_bins"]),
    (lambda p: p["evaluate"].update(top_errors=-1), ["evaluate.top_errors"]),
    (lambda p: p["train"].update(lookahead=20), ["train.lookahead", "bidirectional"]),
    (lambda p: p["train"].update(rnn_type="rnn"), ["train.rnn_type", "lstm"]),
    (lambda p: p["lm"].update(memory="lots"), ["lm.memory", "lots"]),
    (lambda p: p["tune"].update(beam_threshold=0), ["tune.beam_threshold"]),
])
def test_bad_params_name_the_key(mutate, words):
    p = tiny_params()
    mutate(p)
    with pytest.raises(ParamsError) as e:
        validate_params(p)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_shell_metacharacters_are_data(tmp_path):
    p = tiny_params()
    p["mlflow"]["artifact_root"] = "mlruns/a; touch pwned"
    validate_params(p)  # a string is a string: nothing is ever passed through a shell
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(p))
    assert load_params(f)["mlflow"]["artifact_root"].endswith("touch pwned")


def test_unsafe_yaml_is_refused(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("dataset: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(f)
    assert not (tmp_path / "pwned").exists()

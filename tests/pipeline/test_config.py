"""params.yaml as shipped; wrong and hostile params are tests/reliability/test_hostile_input.py."""

from asrflow.pipeline.config import eval_splits, load_params
from conftest import REPO


def test_repo_params_are_valid():
    p = load_params(REPO / "params.yaml")
    assert p["dataset"] == "synth"
    assert eval_splits(p, "librispeech") == ["test-clean", "test-other"]

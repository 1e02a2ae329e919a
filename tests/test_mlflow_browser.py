"""The MLflow UI, in a real browser, shows the runs the pipeline's tracking code writes.

A fresh SQLite store gets ``train``, ``tune`` and ``evaluate`` runs through
:class:`asrflow.pipeline.tracking.StageRun`, nested under their invocation's parent run; ``mlflow server`` serves it on 127.0.0.1 and Debian's
headless Chromium (``make system-deps``) renders the experiment's runs table and the evaluate
run's page. Screenshots go to ``test-artifacts/`` (or ``$ASRFLOW_TEST_ARTIFACTS``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from asrflow.pipeline.tracking import StageRun
from mlflow_browser import (artifacts_dir, assert_png, check_pipeline_runs_in_ui, chromium_binary,
                            displayed_metric, metrics_visible, mlflow_server, run_links, runs_visible, visible_text)

DATASET = "synth"
EXPERIMENT = f"asrflow-{DATASET}"
STAGES = ("train", "tune", "evaluate")
BEAM_WER, GREEDY_WER = 4.5678, 7.0891
NOT_LOGGED = "decode"  # a stage name that no run in the store has
INVOCATION = "snakemake-5eed5eed0123"
PARENT = "snakemake 5eed5eed"  # the parent run's name


@pytest.fixture(scope="module")
def browser() -> str:
    """Headless Chromium (``make test`` installs it first; a missing browser is a failure, not a skip)."""
    return chromium_binary()


@pytest.fixture(scope="module")
def store(tmp_path_factory, browser) -> dict:
    """A SQLite store with one pipeline invocation's runs, written by the project's StageRun.

    """
    root = tmp_path_factory.mktemp("mlflow-store")
    cfg = {"tracking_uri": f"sqlite:///{root}/mlflow.db", "artifact_root": str(root / "artifacts")}
    run_ids = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("ASRFLOW_INVOCATION", INVOCATION)
        for stage in STAGES:
            run = StageRun(stage, DATASET, cfg)
            run.log_params({"stage": {"name": stage, "seed": 7}})
            if stage == "train":
                run.log_metrics({"train_loss": 1.25, "dev_loss": 1.5})
            elif stage == "tune":
                run.log_metrics({"best_alpha": 0.5, "best_beta": 1.0, "dev_beam_wer": 9.25})
            else:
                run.log_metrics({"test_beam_wer": BEAM_WER, "test_greedy_wer": GREEDY_WER})
                run.log_headline({"test_beam_wer": BEAM_WER})
                manifest = root / "test.parquet"
                pd.DataFrame({"utt_id": ["u1", "u2"]}).to_parquet(manifest)
                run.log_dataset(manifest, "test")
            run_ids[stage] = run.flush()
            parent = run.parent_run_id
    exp = MlflowClient(tracking_uri=cfg["tracking_uri"]).get_experiment_by_name(EXPERIMENT)
    return {**cfg, "root": root, "experiment_id": exp.experiment_id, "run_ids": run_ids, "parent": parent}


@pytest.fixture(scope="module")
def server(store) -> str:
    """One ``mlflow server`` on the store for the tests that take it."""
    with mlflow_server(store["tracking_uri"], store["artifact_root"], store["root"] / "server") as url:
        yield url


@pytest.fixture(scope="module")
def shots() -> Path:
    d = artifacts_dir()
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_experiment_page_lists_the_invocation_with_its_stage_runs_nested(store, server, shots):
    # folded (the app's default): the invocation's parent run is the one row
    links, dom = runs_visible(server, store["experiment_id"], [PARENT])
    assert links == {store["parent"]: PARENT}, visible_text(dom)[:3000]
    # the parent expanded: every stage run is a link named after its stage, pointing at that
    # run's id, listed after its parent; nothing else is listed
    png = shots / "mlflow-ui-experiment-runs.png"
    links, dom = runs_visible(server, store["experiment_id"], STAGES, png, expand=[store["parent"]])
    text = visible_text(dom)
    assert links == {store["parent"]: PARENT, **{store["run_ids"][s]: s for s in STAGES}}, text[:3000]
    assert list(run_links(dom, store["experiment_id"]))[0] == store["parent"]
    assert f"{DATASET}/test" in text  # the evaluate run's manifest, in the Dataset column
    assert NOT_LOGGED not in links.values()
    assert EXPERIMENT in text
    assert_png(png)
    # the parent run's page holds the invocation's headline figure
    metrics, dom = metrics_visible(server, store["experiment_id"], store["parent"], ["test_beam_wer"],
                                   shots / "mlflow-ui-parent-run.png")
    assert metrics == {"test_beam_wer": displayed_metric(BEAM_WER)}, visible_text(dom)[:3000]


def test_run_page_shows_the_wer(store, server, shots):
    png = shots / "mlflow-ui-evaluate-run.png"
    metrics, dom = metrics_visible(server, store["experiment_id"], store["run_ids"]["evaluate"],
                                   ["test_beam_wer", "test_greedy_wer"], png)
    assert metrics == {"test_beam_wer": "4.5678", "test_greedy_wer": "7.0891"}, visible_text(dom)[:3000]
    assert metrics["test_beam_wer"] == displayed_metric(BEAM_WER) != displayed_metric(4.5679)
    text = visible_text(dom)
    assert "evaluate" in text and "stage.seed" in text  # the run's name and its flattened params
    assert "train_loss" not in metrics  # another run's metric is not on this page
    assert_png(png)


def test_check_pipeline_runs_in_ui_on_its_own_server(store, shots):
    """The entry point for the pipeline's end-to-end test: starts (and stops) its own server."""
    out = check_pipeline_runs_in_ui(store["tracking_uri"], store["artifact_root"], EXPERIMENT, STAGES,
                                    "test_beam_wer", BEAM_WER, shots)
    assert out["runs"].exists() and out["run"].exists() and out["log"].exists()
    assert out["run"].name == f"{EXPERIMENT}-run-evaluate.png"


@pytest.mark.parametrize("run_names, metric_value, match", [
    ((*STAGES, NOT_LOGGED), BEAM_WER, rf"runs \['{NOT_LOGGED}'\] not on"),
    (STAGES, 4.5679, r"shows test_beam_wer = 4\.5678, expected 4\.5679"),
])
def test_check_pipeline_runs_in_ui_can_fail(store, server, tmp_path, run_names, metric_value, match):
    with pytest.raises(AssertionError, match=match):
        check_pipeline_runs_in_ui(store["tracking_uri"], store["artifact_root"], EXPERIMENT, run_names,
                                  "test_beam_wer", metric_value, tmp_path, server_url=server)


def test_unit_helpers():
    assert [displayed_metric(v) for v in (4.5678, 12.0, 1 / 3, 5e-05, 1e-07, -0.25, 1e21, 0.0)] == \
        ["4.5678", "12", "0.3333333333333333", "0.00005", "1e-7", "-0.25", "1e+21", "0"]

from asrflow.pipeline.tracking import flatten, redact, safe_params


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


def test_redact_hides_url_passwords_only():
    assert redact("http://alice:pw@127.0.0.1:5000/x") == "http://alice:***@127.0.0.1:5000/x"
    assert redact("see postgresql+psycopg2://u:p%40ss@db:5432/m and s3://bucket/k") == \
        "see postgresql+psycopg2://u:***@db:5432/m and s3://bucket/k"
    for plain in ("http://127.0.0.1:5000", "sqlite:///mlruns/mlflow.db", "localhost:29400", "a:b@c", "user@host:22"):
        assert redact(plain) == plain
    assert safe_params({"x.api_token": "t", "x.password": "p", "x.mirrors": "['https://u:p@h/']", "lr": "1",
                        "decode.token_beam": "0", "s3.secret_access_key": "k", "x.token": "t"}) == \
        {"x.api_token": "***", "x.password": "***", "x.mirrors": "['https://u:***@h/']", "lr": "1",
         "decode.token_beam": "0", "s3.secret_access_key": "***", "x.token": "***"}


# ---- runs through MLflow's API: one parent per invocation, stage runs nested, versions and aliases

import hashlib  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from asrflow.pipeline.tracking import PARENT_TAG, StageRun  # noqa: E402


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty SQLite store; the tests' cwd a git repo with params.yaml committed at HEAD."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.0015, "epochs": 2}, "seed": 1}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "params.yaml"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "p"], cwd=repo, check=True)
    monkeypatch.chdir(repo)
    cfg = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "art")}
    return {"cfg": cfg, "repo": repo, "client": MlflowClient(tracking_uri=cfg["tracking_uri"])}


def stage_run(store, stage, invocation, monkeypatch, params=None, headline=None, status="FINISHED"):
    monkeypatch.setenv("ASRFLOW_INVOCATION", invocation)
    run = StageRun(stage, "synth", store["cfg"], params_file=store["repo"] / "params.yaml")
    run.log_params(params or {"seed": 1})
    run.log_headline(headline or {})
    run.flush(status)
    return run


def test_stage_runs_nest_under_one_parent_per_invocation(store, monkeypatch):
    client = store["client"]
    inv_a, inv_b = "snakemake-0123456789ab", "dvc-host-42-777"
    a = [stage_run(store, "tune", inv_a, monkeypatch, {"decode": {"beam": 8}},
                   {"dev_wer": 12.25, "alpha": 0.5, "beta": 1.5}),
         stage_run(store, "evaluate", inv_a, monkeypatch, {"decode": {"beam": 8}, "evaluate": {"n": 3}},
                   {"test_beam_wer": 10.125, "test_beam_cer": 4.5, "other_greedy_wer": 30.0})]
    b = stage_run(store, "tune", inv_b, monkeypatch, headline={"dev_wer": 11.0})
    exp = client.get_experiment_by_name("asrflow-synth")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the "Model training" view
    parents = {r.data.tags[PARENT_TAG]: r for r in client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` != ''")}
    assert sorted(parents) == [inv_b, inv_a]
    pa, pb = parents[inv_a], parents[inv_b]
    assert (pa.info.run_name, pb.info.run_name) == ("snakemake 01234567", f"dvc repro {hashlib.sha1(inv_b.encode()).hexdigest()[:8]}")
    for run in a:
        child = client.get_run(run.run_id)
        assert child.data.tags["mlflow.parentRunId"] == pa.info.run_id == run.parent_run_id
        assert PARENT_TAG not in child.data.tags and child.data.tags["asrflow_invocation"] == inv_a
        assert child.data.tags["mlflow.source.name"] == f"stages/{run.stage}.py"
    assert client.get_run(b.run_id).data.tags["mlflow.parentRunId"] == pb.info.run_id
    # the headline figures and the params the stages read, on the parent; no other invocation's
    assert pa.data.metrics == {"dev_wer": 12.25, "alpha": 0.5, "beta": 1.5, "test_beam_wer": 10.125,
                               "test_beam_cer": 4.5, "other_greedy_wer": 30.0}
    assert pb.data.metrics == {"dev_wer": 11.0}
    assert pa.data.params == {"decode.beam": "8", "evaluate.n": "3"}
    assert pa.info.status == "FINISHED" and pa.info.end_time >= client.get_run(a[1].run_id).info.start_time
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert pa.data.tags["mlflow.source.git.commit"] == commit and pa.data.tags["mlflow.source.name"] == "Snakefile"
    assert pa.data.tags["asrflow.changed_params"] == "(none: params as committed at HEAD)"


def test_parent_named_after_the_dvc_experiment_lists_changed_params_and_fails_with_a_stage(store, monkeypatch):
    client = store["client"]
    monkeypatch.setenv("DVC_EXP_NAME", "lofty-lr")
    (store["repo"] / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.002, "epochs": 2}, "seed": 1,
                                                                "api_token": "s3cret"}))
    inv = "dvc-host-7-99"
    stage_run(store, "train", inv, monkeypatch, {"train": {"lr": 0.002}})
    stage_run(store, "tune", inv, monkeypatch, {"train": {"lr": 0.003}}, status="FAILED")
    stage_run(store, "evaluate", inv, monkeypatch, headline={"test_beam_wer": 9.0})
    parent = client.search_runs([client.get_experiment_by_name("asrflow-synth").experiment_id],
                                f"tags.`{PARENT_TAG}` = '{inv}'")
    assert len(parent) == 1
    p = parent[0]
    assert p.info.run_name == "lofty-lr" and p.data.tags["asrflow.dvc_experiment"] == "lofty-lr"
    assert p.data.tags["asrflow.changed_params"] == "api_token: (absent) → ***; train.lr: 0.0015 → 0.002"
    assert p.data.params["train.lr"] == "0.002" and p.data.tags["asrflow.params_differ.tune"] == "train.lr"
    # a failed stage fails the invocation for good; a later stage's figures still land
    assert p.info.status == "FAILED" and p.data.metrics == {"test_beam_wer": 9.0}


def test_a_stage_run_by_hand_has_no_parent(store, monkeypatch):
    run = stage_run(store, "vocab", "standalone-abc", monkeypatch)
    r = store["client"].get_run(run.run_id)
    assert run.parent_run_id is None and "mlflow.parentRunId" not in r.data.tags


def test_manifests_logged_as_datasets(store, monkeypatch, tmp_path):
    import pandas as pd

    monkeypatch.setenv("ASRFLOW_INVOCATION", "snakemake-0123456789ab")
    dev = store["repo"] / "data/synth/manifests/dev.parquet"
    dev.parent.mkdir(parents=True)
    pd.DataFrame({"utt_id": ["a", "b"]}).to_parquet(dev)
    run = StageRun("tune", "synth", store["cfg"], params_file=store["repo"] / "params.yaml")
    run.log_dataset("data/synth/manifests/dev.parquet", "dev")
    run.flush()
    inputs = store["client"].get_run(run.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest, i.dataset.source, i.dataset.source_type,
             [(t.key, t.value) for t in i.tags]) for i in inputs] == \
        [("synth/dev", hashlib.md5(dev.read_bytes()).hexdigest(), "data/synth/manifests/dev.parquet", "local",
          [("mlflow.data.context", "dev")])]
    assert (store["repo"] / "cache/synth/dvc-hashes.json").exists()  # the stages' shared hash cache


def test_versions_get_candidate_figures_and_champion_only_on_a_better_dev_wer(store, monkeypatch, tmp_path):
    client = store["client"]
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "MLmodel").write_text("flavors: {}\n")
    champions = []
    for i, dev_wer in enumerate([10.0, 12.0, 10.0, 9.5], start=1):
        inv = f"snakemake-{i:012x}"
        monkeypatch.setenv("ASRFLOW_INVOCATION", inv)
        reg = StageRun("register", "synth", store["cfg"], params_file=store["repo"] / "params.yaml")
        reg.log_params({"decode": {"beam_size": 8}})
        reg.register_model(pkg, "asrflow-synth")
        reg.flush()
        assert reg.outputs["model_version"] == i
        assert str(client.get_model_version_by_alias("asrflow-synth", "candidate").version) == str(i)
        rep = StageRun("report", "synth", store["cfg"], params_file=store["repo"] / "params.yaml")
        rep.annotate_model_version({"model_name": "asrflow-synth", "model_version": i},
                                   {"test": {"beam_wer": 7.25 + i, "beam_cer": 3.5, "words": 99}, "alpha": 0.5},
                                   dev_wer)
        rep.flush()
        champions.append((str(client.get_model_version_by_alias("asrflow-synth", "champion").version),
                          rep.outputs["champion_moved"]))
    # worse (12.0) and equal (10.0) dev WERs leave the champion where it is; a strictly better one moves it
    assert champions == [("1", True), ("1", False), ("1", False), ("4", True)]
    v2 = client.get_model_version("asrflow-synth", "2")
    assert v2.tags["test_beam_wer"] == "9.25" and v2.tags["test_beam_cer"] == "3.5" and v2.tags["dev_wer"] == "12.0"
    assert "test_words" not in v2.tags and "alpha" not in v2.tags  # WER/CER per split only
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert f"git commit {commit}" in v2.description and "decode.beam_size=8" in v2.description
    assert "Params changed against HEAD: (none" in v2.description
    # nothing is annotated or moved by a run that failed
    rep = StageRun("report", "synth", store["cfg"])
    rep.annotate_model_version({"model_name": "asrflow-synth", "model_version": 2}, {"test": {"beam_wer": 1.0}}, 1.0)
    rep.flush("FAILED")
    assert str(client.get_model_version_by_alias("asrflow-synth", "champion").version) == "4"
    assert client.get_model_version("asrflow-synth", "2").tags["dev_wer"] == "12.0"

"""The whole chain on a tiny synth config, through Snakemake and through `dvc repro`,
each in a throwaway copy of the repo, with the real tools (espeak-ng, sox, lmplz,
flashlight, torchrun, snakemake, dvc, mlflow)."""

import hashlib
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from asrflow.pipeline import definition as P
from asrflow.pipeline.config import covers
from asrflow.pipeline.lineage import lock_hashes
from repro import product_digests
from conftest import copy_repo, edit_params, run, stage_figures, tiny_params
from mlflow_browser import artifacts_dir

STAGES = [s.name for s in P.STAGES]
ENV = {"ASRFLOW_INVOCATION": "", "MLFLOW_TRACKING_URI": ""}


def runs_by_stage(repo) -> dict[str, list]:
    """The stage runs by name (the invocations' parent runs left out: :func:`parent_runs`)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{repo}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("asrflow-synth")
    out: dict[str, list] = {}
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        if "asrflow.stage" in r.data.tags:
            out.setdefault(r.info.run_name, []).append(r)
    return out


def parent_runs(repo) -> dict[str, object]:
    """The invocations' parent runs by invocation id."""
    client = MlflowClient(tracking_uri=f"sqlite:///{repo}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("asrflow-synth")
    return {r.data.tags["asrflow.invocation"]: r
            for r in client.search_runs([exp.experiment_id], "tags.`asrflow.invocation` != ''", max_results=1000)}


RESULT_ROW = re.compile(r"^\| test \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) / (\d+) / (\d+) "
                        r"\| `([^`]+)` \| `(\w+)` \| `(\w+)` \| `(\w+)` \| `(\w+)` \| `(\w+)` \|$", re.M)


def report_row(repo) -> re.Match:
    report = (repo / "reports/synth_wer.md").read_text()
    row = RESULT_ROW.search(report)
    assert row, report
    return row


def assert_report_has_numbers(repo):
    row = report_row(repo)
    assert all(math.isfinite(float(x)) and 0 <= float(x) for x in row.groups()[1:5])
    ev = json.loads((repo / "metrics/synth/evaluate.json").read_text())
    assert ev["test"]["utterances"] == int(row.group(1)) > 0
    assert ev["test"]["beam_wer"] == pytest.approx(float(row.group(4)), abs=0.005)
    # S + D + I over the reference words is the WER
    sdi = sum(int(x) for x in row.groups()[5:8])
    assert 100 * sdi / ev["test"]["words"] == pytest.approx(ev["test"]["beam_wer"], abs=1e-3)
    for suffix in ("surface", "curve", "duration"):
        assert (repo / f"reports/synth_wer_{suffix}.png").stat().st_size > 1000


SMK_DIGESTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def smk_repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("smk"), tiny_params())
    os.environ.pop("ASRFLOW_INVOCATION", None)
    run(["snakemake", "-j", "2", "reports/synth_wer.md"], cwd=repo, env=ENV)
    SMK_DIGESTS.update(product_digests(repo))
    return repo


def lineage_record(repo, name: str) -> dict:
    return json.loads((repo / f"lineage/synth/{name}.json").read_text())


def flat(d: dict, prefix: str = "") -> dict:
    return {k: v for key, val in d.items()
            for k, v in (flat(val, f"{prefix}{key}.").items() if isinstance(val, dict) else [(f"{prefix}{key}", val)])}


def assert_every_stage_wrote_its_log_metrics_and_benchmark(repo, benchmarks: bool):
    """What the README promises of every stage, under either orchestrator: its metrics JSON
    (figures only), its lineage record (MLflow run, commit, timings) and its own log
    (timestamped lines, no progress-bar redraws, the command it ran first); under Snakemake
    also its benchmark TSV."""
    runs = {name: [r.info.run_id for r in rs] for name, rs in runs_by_stage(repo).items()}
    for name in STAGES:
        stage = P.BY_NAME[name]
        # its DVC metrics file: the figures its runs are compared by, as the definition names them
        figures = flat(json.loads((repo / f"metrics/synth/{name}.json").read_text())) if stage.metrics else {}
        assert bool(figures) == bool(stage.metrics), (name, figures)
        assert all(isinstance(v, (int, float)) for v in figures.values()), (name, figures)
        assert all(stage.compares(k) for k in figures), (name, figures)
        record = lineage_record(repo, name)
        assert not [k for k, v in flat(record).items() if stage.compares(k) and isinstance(v, (int, float))]
        assert record["stage_seconds"] > 0 and record["mlflow_run_id"] in runs[name], (name, record)
        assert record["git_commit"] and "git_dirty" in record, (name, record)
        assert not {"stage_seconds", "mlflow_run_id"} & set(figures), name
        lines = (repo / f"logs/synth/{name}.log").read_text().splitlines()
        assert lines and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in lines), (name, lines[:5])
        assert f"stages/{name}.py" in lines[0] and "\r" not in "".join(lines)
        assert any(f"[{name}] done in" in line for line in lines), (name, lines[-3:])
        assert (repo / f"benchmarks/synth/{name}.tsv").exists() == benchmarks, name


def test_snakemake_run_produces_report(smk_repo):
    assert_report_has_numbers(smk_repo)
    assert_every_stage_wrote_its_log_metrics_and_benchmark(smk_repo, benchmarks=True)


def test_dvc_status_clean_after_snakemake(smk_repo):
    out = run(["dvc", "status"], cwd=smk_repo).stdout
    assert "up to date" in out, out


def test_mlflow_has_one_run_per_stage_grouped(smk_repo):
    runs = runs_by_stage(smk_repo)
    assert sorted(runs) == sorted(STAGES)
    invocations = {r.data.tags["asrflow_invocation"] for rs in runs.values() for r in rs}
    assert len(invocations) == 1 and next(iter(invocations)).startswith("snakemake-")
    assert all(r.info.status == "FINISHED" for rs in runs.values() for r in rs)
    # one parent run for the Snakemake call, every stage run nested under it, holding the headline figures
    parents = parent_runs(smk_repo)
    assert list(parents) == list(invocations)
    parent = parents[next(iter(invocations))]
    assert parent.info.run_name == "snakemake " + next(iter(invocations)).split("-")[1][:8]
    assert {r.data.tags["mlflow.parentRunId"] for rs in runs.values() for r in rs} == {parent.info.run_id}
    ev = json.loads((smk_repo / "metrics/synth/evaluate.json").read_text())
    tuned = json.loads((smk_repo / "metrics/synth/tune.json").read_text())
    assert parent.data.metrics["test_beam_wer"] == ev["test"]["beam_wer"]
    assert parent.data.metrics["test_greedy_cer"] == ev["test"]["greedy_cer"]
    assert (parent.data.metrics["dev_wer"], parent.data.metrics["alpha"]) == (tuned["dev_wer"], tuned["alpha"])
    assert parent.data.params["train.epochs"] == "2" and parent.info.status == "FINISHED"
    test_inputs = [(i.dataset.name, [t.value for t in i.tags]) for i in runs["evaluate"][0].inputs.dataset_inputs]
    assert test_inputs == [("synth/test", ["test"])], test_inputs
    train = runs["train"][0]
    assert train.data.params["train.epochs"] == "2" and train.data.metrics["params"] > 0
    client = MlflowClient(tracking_uri=f"sqlite:///{smk_repo}/mlruns/mlflow.db")
    every = tiny_params()["train"]["log_every_steps"]
    steps = [m.step for m in client.get_metric_history(train.info.run_id, "step_loss")]
    assert steps == list(range(every, int(train.data.metrics["steps"]) + 1, every)) and steps, steps
    assert len(client.get_metric_history(train.info.run_id, "step_audio_s_per_s")) == len(steps)
    # tune: one run holding the whole grid (step = point), the best point tagged, table + surface attached
    tune = runs["tune"][0]
    grid = (smk_repo / "results/synth/tune/grid.csv").read_text().splitlines()[1:]
    history = {m.step: m.value for m in client.get_metric_history(tune.info.run_id, "grid_wer")}
    assert sorted(history) == list(range(len(grid))) == list(range(6))
    assert [history[i] for i in range(6)] == [float(row.split(",")[2]) for row in grid]
    best = json.loads((smk_repo / "results/synth/tune/best.json").read_text())
    assert tune.data.tags["asrflow.best_point"] == f"alpha={best['alpha']},beta={best['beta']}"
    assert {"grid.csv", "surface.png"} <= {a.path for a in client.list_artifacts(tune.info.run_id)}
    # lexicon-free decoding, tuned beside it on its own grid (tune.beside_counts) over the same ranges
    free = (smk_repo / "results/synth/tune/grid-lexicon_free.csv").read_text().splitlines()[1:]
    a, b = tiny_params()["tune"]["beside_counts"]
    assert len(free) == a * b != len(grid) and set(best["lexicon_free"]) == {"alpha", "beta"}
    assert {float(row.split(",")[0]) for row in free} == {float(row.split(",")[0]) for row in grid[::2]}


def test_report_lineage_names_commit_dvc_lock_hashes_and_mlflow_run(smk_repo):
    """Each results row names the commit, the DVC hashes dvc.lock records (after the Snakefile's
    `dvc commit`) for manifests, vocab, LM and model, and the evaluate run in MLflow."""
    row = report_row(smk_repo)
    head = run(["git", "rev-parse", "HEAD"], cwd=smk_repo).stdout.strip()
    assert row.group(9) == head[:10]  # a clean tree: no -dirty
    lock = lock_hashes(smk_repo / "dvc.lock")
    paths = ["data/synth/manifests", "data/synth/vocab.txt", "data/synth/lm", "models/synth"]
    assert [lock[p][:8] for p in paths] == list(row.groups()[9:13])
    report = (smk_repo / "reports/synth_wer.md").read_text()
    assert all(f"`{p}` `{lock[p]}`" in report for p in paths)  # full hashes in the lineage section
    evaluate = runs_by_stage(smk_repo)["evaluate"][0]
    assert evaluate.info.run_id.startswith(row.group(14))
    assert lineage_record(smk_repo, "evaluate")["mlflow_run_id"] == evaluate.info.run_id
    assert evaluate.data.tags["mlflow.source.git.commit"] == head and evaluate.data.tags["asrflow.git_dirty"] == "false"
    assert "No earlier report of this dataset in MLflow" in report


def test_report_from_a_dirty_tree_says_so(smk_repo):
    readme = smk_repo / "README.md"
    original = readme.read_text()
    readme.write_text(original + "\nlocal edit\n")
    try:
        run(["snakemake", "-j", "2", "-f", "reports/synth_wer.md"], cwd=smk_repo, env=ENV)
        assert report_row(smk_repo).group(9).endswith("-dirty")
        report = (smk_repo / "reports/synth_wer.md").read_text()
        assert "**with uncommitted changes** (README.md)" in report
        assert runs_by_stage(smk_repo)["report"][0].data.tags["asrflow.git_dirty"] == "true"
    finally:
        readme.write_text(original)


def test_per_utterance_results_and_rtf(smk_repo):
    ev = stage_figures(smk_repo, "evaluate")["test"]  # counts and RTFs: in the lineage record
    for key in ("rtf_acoustic", "rtf_greedy_decoder", "rtf_beam_decoder"):
        assert 0 < ev[key] < 5, (key, ev[key])
    out = smk_repo / "results/synth/evaluate"
    errs = (out / "errs-test-beam_lm.txt").read_text()
    total = ev["beam_substitutions"] + ev["beam_deletions"] + ev["beam_insertions"]
    assert errs.startswith(f"%WER {ev['beam_wer']:.2f} [ {total} / {ev['words']}, {ev['beam_insertions']} ins, "
                           f"{ev['beam_deletions']} del, {ev['beam_substitutions']} sub ]")
    recogs = (out / "recogs-test-greedy.txt").read_text().splitlines()
    assert len(recogs) == 2 * ev["utterances"] and "\tref=[" in recogs[0] and "\thyp=[" in recogs[1]
    summary = (out / "wer-summary-test.txt").read_text().splitlines()
    # lm.char_order builds a character LM, so lexicon-free decoding is scored beside the lexicon
    assert summary[0] == "settings\tWER" and {line.split("\t")[0] for line in summary[1:]} == \
        {"greedy", "beam_lm", "beam_charlm"}
    assert {"charlm_wer", "charlm_cer", "rtf_charlm_decoder"} <= set(ev)
    by_duration = (smk_repo / "plots/synth/wer_by_duration.csv").read_text().splitlines()
    assert by_duration[0] == "split,bin,from_s,utterances,words,greedy_wer,beam_wer"
    counts = [int(r.split(",")[3]) for r in by_duration[1:]]
    assert sum(counts) == ev["utterances"] and all(counts)  # empty bins left out
    # sclite-style files: one ref per split, a hyp and a per-speaker result per decoder, the
    # total WER the stage's figure; the trn files read back score the same
    from asrflow.scoring.metrics import corpus_rates
    from asrflow.scoring.results import read_trn

    ref = read_trn(out / "ref-test.trn")
    assert len(ref) == ev["utterances"]
    for setting, key in (("greedy", "greedy_wer"), ("beam_lm", "beam_wer"), ("beam_charlm", "charlm_wer")):
        hyp = read_trn(out / f"hyp-test-{setting}.trn")
        assert set(hyp) == set(ref)
        assert corpus_rates([ref[i] for i in ref], [hyp[i] for i in ref])["wer"] == pytest.approx(ev[key], abs=1e-4)
        result = (out / f"result-test-{setting}.txt").read_text().splitlines()
        assert result[0].startswith(f"%WER {ev[key]:.2f} [ ") and result[-1].startswith("Sum ")
        assert float(result[-1].split()[-1]) == pytest.approx(ev[key], abs=0.005)
        speakers = [line.split()[0] for line in result[result.index("") + 2:-1]]
        assert speakers == sorted({i.split("-")[0] for i in ref}) and len(speakers) >= 1


def test_snakemake_html_report(smk_repo):
    run(["snakemake", "--report", "reports/synth_report.html"], cwd=smk_repo, env=ENV)
    html = (smk_repo / "reports/synth_report.html").read_text()
    for expected in ("Decoder tuning", "Evaluation", "Training", "synth_wer_surface.png", "wer_by_duration.csv",
                     "alpha (LM weight)", "filename=synth_wer_surface.png;base64,iVBORw0K"):
        assert expected in html, expected


def test_registered_model_transcribes_like_evaluate(smk_repo):
    """`asrflow transcribe` on the registered MLflow model (by URI) and on the package directory
    gives the evaluate stage's beam+LM hypotheses for the same test files."""
    import pandas as pd

    reg = lineage_record(smk_repo, "register")
    assert reg["model_uri"] == "models:/asrflow-synth/1"
    recogs = pd.read_csv(smk_repo / "results/synth/evaluate/test_recogs.tsv", sep="\t", keep_default_na=False)
    rows = pd.read_parquet(smk_repo / "data/synth/manifests/test.parquet", columns=["utt_id", "audio_filepath"])
    files = dict(zip(rows["utt_id"], rows["audio_filepath"]))
    utts = recogs["utt_id"].tolist()[:3]
    paths = [files[u] for u in utts]
    for model in (reg["model_uri"], reg["package"]):
        out = run([str(smk_repo / ".venv/bin/asrflow"), "transcribe", "--model", model, *paths],
                  cwd=smk_repo, env=ENV).stdout.splitlines()
        assert out == [f"{p}\t{h}" for p, h in zip(paths, recogs["beam"].tolist()[:3])], out


def test_onnx_export_equals_pytorch_on_the_test_split(smk_repo, tmp_path):
    """`asrflow export` of the registered model: on every test utterance ONNX Runtime's
    log-probs are PyTorch's within 1e-4, and its beam+LM transcripts are the evaluate stage's
    hypotheses, so the WER is the stage's."""
    import numpy as np
    import pandas as pd

    from asrflow.data.audio import prepare_audio
    from asrflow.scoring.metrics import corpus_rates
    from asrflow.serve.export import TOLERANCE
    from asrflow.serve.loading import load_transcriber

    out = tmp_path / "onnx"
    run([str(smk_repo / ".venv/bin/asrflow"), "export", "--model", "models:/asrflow-synth/1", "--out", str(out)],
        cwd=smk_repo, env=ENV)
    recogs = pd.read_csv(smk_repo / "results/synth/evaluate/test_recogs.tsv", sep="\t", keep_default_na=False)
    rows = pd.read_parquet(smk_repo / "data/synth/manifests/test.parquet", columns=["utt_id", "audio_filepath"])
    paths = [str(smk_repo / dict(zip(rows["utt_id"], rows["audio_filepath"]))[u]) for u in recogs["utt_id"]]
    torch_model, onnx_model = load_transcriber(smk_repo / "models/synth_mlflow"), load_transcriber(out)
    worst = 0.0
    for path in paths:
        wav = prepare_audio(path, 16000, str(tmp_path))
        want, got = torch_model.logprobs(wav), onnx_model.logprobs(wav)
        assert got.shape == want.shape, path
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= TOLERANCE, worst
    hyps = [r.text for r in onnx_model.transcribe(paths)]
    assert hyps == recogs["beam"].tolist()
    ev = json.loads((smk_repo / "metrics/synth/evaluate.json").read_text())["test"]
    assert corpus_rates(recogs["reference"].tolist(), hyps)["wer"] == pytest.approx(ev["beam_wer"], abs=1e-3)


def test_mlflow_ui_in_headless_chromium_shows_the_runs_and_wer(smk_repo):
    from mlflow_browser import artifacts_dir, check_pipeline_runs_in_ui

    ev = json.loads((smk_repo / "metrics/synth/evaluate.json").read_text())
    shots = check_pipeline_runs_in_ui(f"sqlite:///{smk_repo}/mlruns/mlflow.db", str(smk_repo / "mlruns/artifacts"),
                                      "asrflow-synth", STAGES, "test_beam_wer", ev["test"]["beam_wer"],
                                      artifacts_dir(), metric_run="evaluate")
    assert shots["runs"].stat().st_size > 10_000


# the hash columns of the stages' file dependencies, left out of `dvc exp show` (README)
EXP_SHOW_DROP = "(data|lineage|metrics|models|plots|results)/.*"


def test_param_edit_reruns_train_and_downstream_only(smk_repo):
    """The README's comparison workflow: commit the run's dvc.lock, metrics and plots; try a
    params change as a DVC experiment; compare with `dvc exp show`, `dvc metrics diff`,
    `dvc plots diff` and the report's comparison with the previous run from MLflow."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "add", "dvc.lock", "metrics", "plots", "lineage"], cwd=smk_repo)
    run(git + ["commit", "-qm", "baseline run"], cwd=smk_repo)
    params = (smk_repo / "params.yaml").read_text()
    old, new = str(yaml.safe_load(params)["train"]["lr"]), "0.002"  # the README's example; differs from the default
    assert old != new
    (smk_repo / "params.yaml").write_text(re.sub(r"(?m)^  lr: .*$", f"  lr: {new}", params, count=1))
    dry = run(["snakemake", "-n", "reports/synth_wer.md"], cwd=smk_repo, env=ENV).stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.split("Job stats:")[1].split("Reasons")[0], re.M))
    jobs.pop("total", None)
    assert set(jobs) == {"train", "tune", "evaluate", "register", "report"}, dry
    (smk_repo / "params.yaml").write_text(params)
    out = run(["dvc", "exp", "run", "-S", f"train.lr={new}"], cwd=smk_repo, env=ENV).stdout
    for s in ("download", "manifest", "stats", "vocab", "lm"):
        assert f"Stage '{s}' didn't change, skipping" in out, out
    for s in ("train", "tune", "evaluate", "register", "report"):
        assert f"Running stage '{s}'" in out, out
    assert "up to date" in run(["dvc", "status"], cwd=smk_repo).stdout
    assert_report_has_numbers(smk_repo)
    runs = runs_by_stage(smk_repo)
    assert len(runs["train"]) == 2 and len(runs["download"]) == 1
    dvc_inv = {r.data.tags["asrflow_invocation"] for r in runs["train"]} - \
        {runs["download"][0].data.tags["asrflow_invocation"]}
    assert len(dvc_inv) == 1 and next(iter(dvc_inv)).startswith("dvc-"), dvc_inv
    # the experiment's parent run: named after the DVC experiment, naming the param it changed
    parent = parent_runs(smk_repo)[next(iter(dvc_inv))]
    exp_names = run(["dvc", "exp", "list", "--names-only"], cwd=smk_repo).stdout.split()
    assert parent.info.run_name in exp_names, (parent.info.run_name, exp_names)
    assert parent.data.tags["asrflow.changed_params"] == f"train.lr: {old} → {new}"
    assert all(stage in {r.info.run_name for rs in runs.values() for r in rs
                         if r.data.tags["asrflow_invocation"] in dvc_inv} for stage in ("tune", "evaluate", "report"))
    # DVC's views: the experiment beside the baseline, metric and plot changes against HEAD
    shown = json.loads(run(["dvc", "exp", "show", "--json"], cwd=smk_repo).stdout)
    lrs = {json.dumps(e.get("data", {}).get("params", {}).get("params.yaml", {}).get("data", {}).get("train", {}).get("lr"))
           for rev in shown for e in [rev] + [x for exp in rev.get("experiments") or [] for x in exp.get("revs", [])]}
    assert {old, new} <= lrs, lrs
    # what a DVC user compares: the experiment beside its baseline, the changed columns only, less
    # the hash columns of the stages' file dependencies (as the README shows it; kept in test-artifacts/)
    table = run(["dvc", "exp", "show", "--only-changed", "--md", "--no-pager", "--drop", EXP_SHOW_DROP],
                cwd=smk_repo).stdout
    out = artifacts_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "dvc-exp-show-only-changed.md").write_text(table)
    columns = [c.strip() for c in table.splitlines()[0].strip().strip("|").split("|")]
    assert columns[:2] == ["Experiment", "Created"] and "train.lr" in columns, columns
    figures = {k for f in (smk_repo / "metrics/synth").glob("*.json") for k in _leaves(json.loads(f.read_text()), "")}
    # the rest are figures: WERs and CERs among them, no ids, timings or paths
    assert set(columns[2:]) - {"train.lr"} <= {k.lstrip(".") for k in figures} | {k.split(".", 2)[-1] for k in figures}
    assert [c for c in columns if c.endswith(("_wer", "_cer")) and c.startswith("test.")], columns
    # at most 16: Experiment, Created, train.lr and the figures the definition names for train
    # (best dev WER/CER, audio-s/s), tune (alpha, beta, dev WER/CER) and evaluate (WER/CER of 3
    # decoders on one test split) that a change of train.lr can move; the tiny run moves fewer
    assert len(columns) <= 16, columns
    diff = json.loads(run(["dvc", "metrics", "diff", "--all", "--json"], cwd=smk_repo).stdout)
    beam = diff["metrics/synth/evaluate.json"]["test.beam_wer"]
    assert beam["new"] == json.loads((smk_repo / "metrics/synth/evaluate.json").read_text())["test"]["beam_wer"]
    train = diff["metrics/synth/train.json"]
    assert any(train[k]["old"] != train[k]["new"] for k in ("best_dev_cer", "best_dev_wer")), train
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], cwd=smk_repo).stdout)["data"]
    curve = plots["Learning curve: dev error rates (%) by epoch"][0]
    assert {"HEAD", "workspace"} <= set(curve["revisions"]), curve["revisions"]
    assert {"Tuning: dev WER (%) over alpha, one point per beta", "Test WER (%) by utterance duration, beam+LM",
            "Learning curve: training CTC loss by epoch"} <= set(plots)
    # the report compares itself with the previous report runs in MLflow, naming the changed param
    report = (smk_repo / "reports/synth_wer.md").read_text()
    compared = report.split("## Compared with previous runs")[1].split("## ")[0]
    assert f"`train.lr`: {old} → {new}" in compared, compared


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """A fresh copy in which `dvc repro` ran the whole chain (and its stdout)."""
    repo = copy_repo(tmp_path_factory.mktemp("dvc"), tiny_params())
    return repo, run(["dvc", "repro"], cwd=repo, env=ENV).stdout


def test_dvc_repro_from_scratch_matches_snakemake_byte_for_byte(smk_repo, dvc_repo):
    """`dvc repro` in a fresh copy runs every stage, and its products equal the Snakemake run's
    byte for byte: corpus archives, manifests, Parquet with the embedded FLACs, vocab, stats, LM, checkpoint (bit-reproducible
    CPU training with a fixed seed), tuning table, per-utterance results and report."""
    repo, out = dvc_repo
    assert all(f"Running stage '{s}'" in out for s in STAGES), out
    assert_report_has_numbers(repo)
    assert_every_stage_wrote_its_log_metrics_and_benchmark(repo, benchmarks=False)
    assert_dvc_shows_figures_only(repo)
    assert_duration_plot_bins_in_numeric_order(repo)
    runs = runs_by_stage(repo)
    assert sorted(runs) == sorted(STAGES)
    assert len({r.data.tags["asrflow_invocation"] for rs in runs.values() for r in rs}) == 1
    ours = product_digests(repo)
    assert len(ours) > 15 and "models/synth/model.pt" in ours
    assert {k for k in ours if k.endswith(".tar.gz")} == {f"data/synth/archives/{s}.tar.gz" for s in ("train", "dev", "test")}
    assert ours == SMK_DIGESTS, sorted(k for k in ours if ours[k] != SMK_DIGESTS.get(k))


def assert_dvc_shows_figures_only(repo):
    """`dvc metrics show` holds the stages' figures and nothing else: no run ids, timings, names."""
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], cwd=repo).stdout)
    data = {path: flat(entry["data"]) for rev in shown.values() for path, entry in rev["data"].items()}
    assert {f"metrics/synth/{s.name}.json" for s in P.STAGES if s.metrics} == set(data), sorted(data)
    assert data["metrics/synth/evaluate.json"]["test.beam_wer"] >= 0
    values = {f"{path}:{k}": v for path, d in data.items() for k, v in d.items()}
    assert all(isinstance(v, (int, float)) for v in values.values()), \
        {k: v for k, v in values.items() if not isinstance(v, (int, float))}
    assert not [k for k in values if k.rsplit(".", 1)[-1] in ("mlflow_run_id", "stage_seconds", "train_seconds",
                                                              "grid_seconds", "model_uri", "package", "device")]


def assert_duration_plot_bins_in_numeric_order(repo):
    """`dvc plots show` draws the duration bins as categories in their labels' order: that is the
    bins' numeric order (labels are zero-padded), and bins without utterances are left out."""
    shown = json.loads(run(["dvc", "plots", "show", "--json"], cwd=repo).stdout)
    plot = shown["data"]["Test WER (%) by utterance duration, beam+LM"][0]
    assert plot["content"]["encoding"]["y"]["type"] == "nominal"  # no sort given: ascending labels
    rows = plot["content"]["data"]["values"]
    labels = sorted({r["bin"] for r in rows})
    starts = {r["bin"]: float(r["from_s"]) for r in rows}
    assert [starts[b] for b in labels] == sorted(starts.values()) and len(labels) >= 2, labels
    assert all(int(r["utterances"]) > 0 for r in rows)


# for each stage, a bad value of a key it reads: under plain `dvc repro <stage>` DVC would
# remove the stage's outputs before the command refuses it
BAD_FOR_STAGE = {
    "download": lambda p: p["datasets"]["synth"].update(voices=["en-us\n"]),
    "manifest": lambda p: p["manifest"].update(audio_codec="mp3"),
    "stats": lambda p: p["stats"].update(sample_size="lots"),
    "vocab": lambda p: p["vocab"].update(min_count="lots"),
    "lm": lambda p: p["lm"].update(prune=[0, 2, 1]),
    "train": lambda p: p["train"].update(lr=0),
    "tune": lambda p: p["tune"].update(beam_threshold=0),
    "evaluate": lambda p: p["evaluate"].update(duration_bins=[]),
    "register": lambda p: p["decode"].update(beam_size=-5),
    "report": lambda p: p["evaluate"].update(top_errors=-1),
}
FAULTS = Path(__file__).parent / "reliability" / "faults"


def outputs(repo) -> dict[str, str]:
    """SHA-256 of every stage output file (products, metrics, plots, reports)."""
    return {str(f.relative_to(repo)): hashlib.sha256(f.read_bytes()).hexdigest()
            for d in ("data/synth", "models", "results", "metrics", "plots", "reports")
            for f in sorted((repo / d).rglob("*")) if f.is_file() and "/raw/" not in str(f)}


def test_asrflow_repro_checks_params_before_dvc_removes_anything(dvc_repo):
    repo, _ = dvc_repo
    before, params = outputs(repo), (repo / "params.yaml").read_text()
    assert set(BAD_FOR_STAGE) == set(STAGES) and len(before) > 30
    try:
        for name, bad in BAD_FOR_STAGE.items():
            edit_params(repo, bad)
            proc = run(["asrflow", "repro", name], cwd=repo, env=ENV, check=False)
            assert proc.returncode == 2 and "nothing ran and no file changed" in proc.stderr, (name, proc.stderr)
            assert outputs(repo) == before, name
            (repo / "params.yaml").write_text(params)
        # a bad key that no stale stage reads is reported too (stats is up to date; top_errors is report's)
        BAD_FOR_STAGE["report"](p := yaml.safe_load(params))
        (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        proc = run(["asrflow", "repro", "stats"], cwd=repo, env=ENV, check=False)
        assert proc.returncode == 2 and "evaluate.top_errors" in proc.stderr, proc.stderr
    finally:
        (repo / "params.yaml").write_text(params)
    assert run(["dvc", "status"], cwd=repo, env=ENV).stdout.strip() == "Data and pipelines are up to date."

    # a stage killed after DVC removed its outputs: asrflow repro checks them out again from the cache
    edit_params(repo, lambda p: p["tune"].update(alpha_count=4))
    fault = {"event": "open", "match": r"results/synth/\.tune\.partial", "nth": 1}
    proc = run(["asrflow", "repro", "tune"], cwd=repo, check=False,
               env={**ENV, "PYTHONPATH": f"{repo / 'src'}:{FAULTS}", "ASRFLOW_FAULT": json.dumps(fault)})
    assert proc.returncode != 0
    assert "are back from the DVC cache: results/synth/tune" in proc.stderr, proc.stderr[-2000:]
    assert "made again when their stage next runs: lineage/synth/tune.json, metrics/synth/tune.json, " \
        "plots/synth/tune_grid.csv" in proc.stderr
    now = outputs(repo)
    assert {k: v for k, v in before.items() if k.startswith("results/synth/tune/")} == \
        {k: v for k, v in now.items() if k.startswith("results/synth/tune/")}
    (repo / "params.yaml").write_text(params)
    run(["asrflow", "repro"], cwd=repo, env=ENV)  # tune again for its metrics: the same products
    products = lambda d: {k: v for k, v in d.items() if not k.startswith(("metrics/", "reports/"))}  # noqa: E731
    assert products(outputs(repo)) == products(before)
    assert run(["dvc", "status"], cwd=repo, env=ENV).stdout.strip() == "Data and pipelines are up to date."


def planned_jobs(repo) -> set[str]:
    dry = run(["snakemake", "-n", "reports/synth_wer.md"], cwd=repo, env=ENV).stdout
    if "Nothing to be done" in dry:
        return set()
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.split("Job stats:")[1].split("Reasons")[0], re.M))
    jobs.pop("total", None)
    return set(jobs)


def stale_in_dvc(repo) -> set[str]:
    return set(json.loads(run(["dvc", "status", "--json"], cwd=repo).stdout or "{}"))


def _leaves(node, key: str) -> list[str]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{key}.{k}")]
    return [key]


def test_each_stage_reads_exactly_the_params_keys_it_declares(smk_repo):
    """The keys a stage declares (what DVC's `params:` and Snakemake's `params:` watch) are the
    keys its run read, as the stage kit recorded them into its lineage record: nothing read is
    undeclared (the stage kit refuses such a read; checked here again), and every declared key
    was read, the whole of it (a block declared but read in part would re-run the stage for
    keys it never looks at)."""
    params = yaml.safe_load((smk_repo / "params.yaml").read_text())
    for s in P.STAGES:
        read = lineage_record(smk_repo, s.name)["params_read"]
        declared = s.keys("synth", params)
        assert [k for k in read if not covers(declared, k)] == [], s.name
        unread = [leaf for d in declared for leaf in _leaves(P.lookup(params, d), d) if not covers(read, leaf)]
        assert unread == [], (s.name, read)


EVERY = {s.name for s in P.STAGES}
AFTER_TRAIN = {"tune", "evaluate", "register", "report"}
AFTER_MANIFEST = EVERY - {"download"}


def _set(key: str, value):
    def change(p):
        *parents, leaf = key.split(".")
        node = p
        for part in parents:
            node = node[part]
        node[leaf] = value(node[leaf]) if callable(value) else value
    return change


# (key, new value or a function of the old one, stale under DVC, planned by Snakemake). DVC
# lists the stages whose own params changed; Snakemake plans them and every stage after.
PARAM_EDITS = [
    ("evaluate.top_errors", lambda v: v + 1, {"report"}, {"report"}),  # read by report only
    ("evaluate.max_utterances", 7, {"evaluate"}, {"evaluate", "report"}),
    ("datasets.librispeech.timeout_s", lambda v: v + 1, set(), set()),  # another dataset's key
    ("datasets.librispeech.splits.dev", ["dev-other"], set(), set()),
    ("mlflow.artifact_root", "elsewhere/artifacts", set(), set()),  # where runs are recorded
    ("cluster.default.runtime", lambda v: v + 1, set(), set()),  # a Slurm job's time limit
    ("tune.alpha_count", lambda v: v + 1, {"tune"}, AFTER_TRAIN),
    ("decode.beam_size", lambda v: v + 1, {"tune", "evaluate", "register"}, AFTER_TRAIN),
    ("lm.char_order", lambda v: v - 1, {"lm", "tune"}, {"lm"} | AFTER_TRAIN),
    ("lm.order", lambda v: v + 1, {"lm"}, {"lm"} | AFTER_TRAIN),
    ("train.lr", lambda v: v * 2, {"train"}, {"train"} | AFTER_TRAIN),
    ("train_per_dataset.synth", {"epochs": 3}, {"train"}, {"train"} | AFTER_TRAIN),  # the dataset's own training
    ("train_per_dataset.synth_zh", {"epochs": 9}, set(), set()),  # another dataset's
    ("train_per_family.deepspeech2", {"lr": 0.002}, {"train"}, {"train"} | AFTER_TRAIN),  # the family's own
    ("train_per_family.quartznet", {"lr": 0.03}, set(), set()),  # a family not chosen
    ("stats.sample_size", lambda v: v + 1, {"stats"}, {"stats", "train"} | AFTER_TRAIN),
    ("vocab.min_count", lambda v: v + 1, {"vocab"}, {"vocab", "lm", "train"} | AFTER_TRAIN),
    ("features.n_mels", lambda v: v - 8, {"stats", "train"}, {"stats", "train"} | AFTER_TRAIN),
    ("features.hop_ms", lambda v: v + 1, {"manifest", "stats", "train"}, AFTER_MANIFEST),
    ("manifest.min_duration", lambda v: v + 0.01, {"manifest"}, AFTER_MANIFEST),
    ("model.deepspeech2.subsampling.kernel", lambda v: [v[0], v[1] - 2], {"manifest", "train"}, AFTER_MANIFEST),
    ("model.deepspeech2.rnn_hidden", lambda v: v + 8, {"train"}, {"train"} | AFTER_TRAIN),
    ("model.jasper.subsampling.kernel", lambda v: v + 2, set(), set()),  # a family not chosen
    ("datasets.synth.rate", lambda v: [v[0] + 1, v[1]], {"download"}, EVERY),  # a source option
    ("datasets.synth.resample", True, {"download", "manifest"}, EVERY),  # read by the manifest stage too
    ("datasets.synth.language", "zh", {"download", "manifest", "vocab", "lm", "tune", "report"}, EVERY),
    ("seed", lambda v: v + 1, {"download", "stats", "train"}, EVERY),
]


def test_a_params_edit_makes_exactly_the_stages_reading_it_stale(smk_repo):
    """Re-runs at key granularity: editing one key makes stale, under both tools, exactly the
    stages that read it (and, for Snakemake, what follows them); a key of another dataset, of
    the tracking store or of the cluster makes nothing stale. One key per distinct set of
    reading stages, and the keys the issue names (evaluate.top_errors re-ran evaluate;
    download.librispeech.timeout_s planned all ten synth jobs)."""
    original = (smk_repo / "params.yaml").read_text()
    run(["dvc", "commit", "--force", "--quiet"], cwd=smk_repo)  # whatever the earlier tests left: recorded
    run(["snakemake", "--touch", "reports/synth_wer.md"], cwd=smk_repo, env=ENV)
    assert stale_in_dvc(smk_repo) == set() and planned_jobs(smk_repo) == set()
    wrong = []
    try:
        for key, value, stale, planned in PARAM_EDITS:
            edit_params(smk_repo, _set(key, value))
            with ThreadPoolExecutor(2) as pool:  # both only read the repository: asked at once, one per core
                dvc, smk = pool.submit(stale_in_dvc, smk_repo), pool.submit(planned_jobs, smk_repo)
                seen = (dvc.result(), smk.result())
            if seen != (stale, planned):
                wrong.append(f"{key}: DVC {sorted(seen[0])} (expected {sorted(stale)}), "
                             f"Snakemake {sorted(seen[1])} (expected {sorted(planned)})")
            (smk_repo / "params.yaml").write_text(original)
    finally:
        (smk_repo / "params.yaml").write_text(original)
    assert wrong == []
    assert stale_in_dvc(smk_repo) == set() and planned_jobs(smk_repo) == set()


@pytest.mark.parametrize("module, stale, planned", [
    # features are computed by stats and train, and to read a model (tune, evaluate, register)
    ("features/logmel.py", {"stats", "train", "tune", "evaluate", "register"},
     {"stats", "train", "tune", "evaluate", "register", "report"}),
    ("evaluate/report.py", {"report"}, {"report"}),
])
def test_a_code_edit_makes_exactly_the_stages_running_it_stale(smk_repo, module, stale, planned):
    """Code lineage: a stage's code dependencies are what its entry point imports, so editing a
    library module makes the stages that run it stale under both tools (DVC lists those whose
    own dependencies changed; Snakemake plans them and what follows). Runs last: Snakemake
    judges by modification time, so the edited file stays newer than the outputs."""
    path = smk_repo / "src/asrflow" / module
    original = path.read_text()
    run(["dvc", "commit", "--force", "--quiet"], cwd=smk_repo)  # whatever the earlier tests left: recorded
    run(["snakemake", "--touch", "reports/synth_wer.md"], cwd=smk_repo, env=ENV)
    assert stale_in_dvc(smk_repo) == set() and planned_jobs(smk_repo) == set()
    try:
        path.write_text(original + "\n# an edit\n")
        assert stale_in_dvc(smk_repo) == stale
        assert planned_jobs(smk_repo) == planned
    finally:
        path.write_text(original)


def test_switching_orchestrators_never_reuses_the_others_stale_output(dvc_repo):
    """Issue: after `dvc exp run -S tune.alpha_count=...` and params.yaml put back, Snakemake's own
    record of tune matched params.yaml, so it would have reused DVC's grid. Every stage stamps its
    run (params values, code, products) into its lineage record, and the Snakefile forces the
    stages whose products the stamp does not vouch for. Back and forth, with edits in between."""
    repo, _ = dvc_repo
    params = (repo / "params.yaml").read_text()
    grid_rows = lambda: len((repo / "results/synth/tune/grid.csv").read_text().splitlines()) - 1  # noqa: E731
    full = grid_rows()
    run(["dvc", "exp", "run", "-S", "tune.alpha_count=2"], cwd=repo, env=ENV)
    assert grid_rows() != full
    (repo / "params.yaml").write_text(params)  # params.yaml put back; DVC's smaller grid stays on disk
    assert "tune" in stale_in_dvc(repo)
    dry = run(["snakemake", "-n", "reports/synth_wer.md"], cwd=repo, env=ENV)
    assert planned_jobs(repo) == {"tune", "evaluate", "register", "report"}, dry.stdout
    assert "tune.alpha_count=2, params.yaml says 3" in dry.stderr, dry.stderr
    run(["snakemake", "-j", "2", "reports/synth_wer.md"], cwd=repo, env=ENV)
    assert grid_rows() == full
    assert stale_in_dvc(repo) == set() and planned_jobs(repo) == set()
    # and the other way: Snakemake runs an edit, the edit is undone, DVC notices
    (repo / "params.yaml").write_text(re.sub(r"(?m)^  beta_count: .*$", "  beta_count: 3", params, count=1))
    run(["snakemake", "-j", "2", "reports/synth_wer.md"], cwd=repo, env=ENV)
    (repo / "params.yaml").write_text(params)
    assert "tune" in stale_in_dvc(repo)
    assert planned_jobs(repo) == {"tune", "evaluate", "register", "report"}
    run(["dvc", "repro"], cwd=repo, env=ENV)  # restores the earlier tune from DVC's run cache
    assert grid_rows() == full and stale_in_dvc(repo) == set()
    # the stamps vouch for every product; what Snakemake may still plan is by its logs' and
    # benchmarks' dates (DVC restored outputs without running the stages), never stale products
    dry = run(["snakemake", "-n", "reports/synth_wer.md"], cwd=repo, env=ENV)
    assert "asrflow: running" not in dry.stderr and "tune" not in planned_jobs(repo), dry.stderr

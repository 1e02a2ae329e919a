"""Hostile and wrong input: params values holding shell code, wrong params, unsafe YAML,
credentials in tracking URIs and params, and servers reachable from the network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from asrflow.pipeline.config import ParamsError, load_params, validate_params
from asrflow.pipeline.tracking import StageRun
from conftest import REPO, TRAIN_ENV, data_params, edit_params, run, tiny_params
from mlflow_browser import free_port, serving
from test_orchestration_faults import clone

INJECTED = "touch pwned"


def pwned(repo: Path) -> list[Path]:
    return list(repo.rglob("pwned"))


@pytest.mark.parametrize("tool", ["snakemake", "dvc"])
def test_shell_metacharacters_in_params_are_data(data_repo, tmp_path, tool):
    """A valid value full of shell syntax reaches the program as one argument; values that would
    have been spliced into a command line (the launch's rendezvous endpoint, the dataset name)
    are refused before anything runs, naming the key. Nothing is ever executed."""
    repo = clone(data_repo, tmp_path / tool)
    odd = f"tmp; {INJECTED}; echo $(id) `id`"
    (repo / odd).mkdir()
    edit_params(repo, lambda p: p["lm"].update(tmp_dir=odd))  # lmplz -T <this>/lmplz-
    lm = {"snakemake": ["snakemake", "-j", "1", "data/synth/lm"], "dvc": ["dvc", "repro", "lm"]}[tool]
    run(lm, cwd=repo, env=TRAIN_ENV)
    assert (repo / "data/synth/lm/lm.bin").stat().st_size > 0 and not pwned(repo)
    refused = [(lambda p: p["train"].update(rdzv_endpoint=f"localhost:0; {INJECTED}"), "rdzv_endpoint",
                {"snakemake": ["snakemake", "-j", "1", "models/synth"], "dvc": ["dvc", "repro", "-s", "train"]}[tool]),
               (lambda p: p.update(dataset=f"synth; {INJECTED}"), "dataset",
                {"snakemake": ["snakemake", "-j", "1", "data/synth/lm"], "dvc": ["dvc", "repro", "-s", "download"]}[tool])]
    for change, key, cmd in refused:
        (repo / "params.yaml").write_text(yaml.safe_dump(data_params(), sort_keys=False))
        edit_params(repo, change)
        proc = run(cmd, cwd=repo, check=False, env=TRAIN_ENV)
        log = proc.stdout + proc.stderr
        assert proc.returncode != 0 and key in log and INJECTED in log, log[-3000:]
        assert not pwned(repo), log[-3000:]
        assert not (repo / "models/synth").exists()


@pytest.mark.parametrize("mutate, words", [
    (lambda p: p["train"].update(epochz=3), ["unknown key", "train", "epochz", "epochs"]),
    (lambda p: p.update(extra=1), ["unknown key", "extra"]),
    (lambda p: p["train"].update(epochs="ten"), ["train.epochs", "'ten'", "integer"]),
    (lambda p: p["tune"].update(alpha=[2.0, 0.5]), ["tune.alpha", "min <= max"]),
    (lambda p: p["decode"].update(beam_size=-5), ["decode.beam_size", "-5"]),
    (lambda p: p.update(dataset="timit"), ["dataset", "timit", "synth", "librispeech"]),
    (lambda p: p["manifest"].update(min_duration=30.0), ["manifest.min_duration", "max_duration"]),
    (lambda p: (p["decode"].update(mode="lexicon_free"), p["lm"].update(char_order=0)), ["decode.mode", "lm.char_order"]),
    (lambda p: p["decode"].update(mode="words"), ["decode.mode", "lexicon_free"]),
    (lambda p: (p["decode"].update(mode="lexicon_free"), p["vocab"].update(units="bpe")), ["decode.mode", "vocab.units"]),
    (lambda p: p["vocab"].update(units="wordpiece"), ["vocab.units", "wordpiece", "bpe"]),
    (lambda p: p["datasets"]["synth"].update(word_zipf=1.0), ["datasets.synth.word_zipf", "Mandarin"]),
    (lambda p: p["lm"].update(quantize={"pointer_bits": 22, "prob_bits": 8, "backoff_bits": 8}),
     ["lm.quantize", "trie"]),
    (lambda p: p["lm"].update(prune=[0, 2, 1]), ["lm.prune", "non-decreasing"]),
    (lambda p: p["lm"].update(prune=[1, 1, 1]), ["lm.prune", "starting with 0"]),
    (lambda p: p["lm"].update(char_order=9), ["lm.char_order"]),
    (lambda p: p["evaluate"].update(duration_bins=[0, 5, 5, 10]), ["evaluate.duration_bins", "increase"]),
    (lambda p: p["evaluate"].update(duration_bins=[1, 5]), ["evaluate.duration_bins", "start at 0"]),
    (lambda p: p["evaluate"].update(duration_bins=[]), ["evaluate.duration_bins"]),
    (lambda p: p["evaluate"].update(top_errors=-1), ["evaluate.top_errors"]),
    (lambda p: p["model"]["deepspeech2"].update(lookahead=20), ["model.deepspeech2.lookahead", "bidirectional"]),
    (lambda p: p["model"]["deepspeech2"].update(rnn_type="rnn"), ["model.deepspeech2.rnn_type", "lstm"]),
    (lambda p: p["model"].update(family="wav2vec"), ["model.family", "wav2vec", "quartznet"]),
    (lambda p: p["model"]["jasper"]["blocks"].append([64, 12]), ["model.jasper.blocks[5]", "kernel 12", "odd"]),
    (lambda p: p["model"]["conformer"].update(heads=5), ["model.conformer", "heads (5)"]),
    (lambda p: p["datasets"]["synth"].update(source="ftp"), ["datasets.synth.source", "ftp", "common_voice"]),
    (lambda p: p["datasets"]["synth"]["splits"].update(train=[".."]), ["datasets.synth.splits.train.0", "'..'"]),
    (lambda p: p["datasets"].update(mine={"source": "folder", "language": "en", "resample": False,
                                          "splits": {"train": ["a"], "dev": ["b"], "test": ["c"]},
                                          "path": "/data\n/x"}), ["datasets.mine.path"]),
    (lambda p: p["datasets"].update(Mine=p["datasets"]["synth"]), ["datasets", "Mine"]),
    (lambda p: p["datasets"]["synth"].update(utterances={"train": 5, "dev": 2, "test": 2},
                                            splits={"train": ["train"], "dev": ["dev"], "test": ["extra"]}),
     ["datasets.synth.splits", "extra", "datasets.synth.utterances"]),
    (lambda p: p["lm"].update(memory="lots"), ["lm.memory", "lots"]),
    (lambda p: p["tune"].update(beam_threshold=0), ["tune.beam_threshold"]),
    # a pattern matches the whole value: Python's `$` alone also matches before a final newline
    (lambda p: p["train"].update(rdzv_endpoint="localhost:0\n"), ["train.rdzv_endpoint", "localhost:0\\n"]),
    (lambda p: p["datasets"]["synth"].update(voices=["en-us\n"]), ["datasets.synth.voices.0", "en-us\\n"]),
    (lambda p: p["datasets"]["librispeech"].update(mirrors=["https://www.openslr.org/resources\n"]),
     ["datasets.librispeech.mirrors.0"]),
    (lambda p: p["datasets"]["synth"]["splits"].update(train=["train\n"]), ["datasets.synth.splits.train.0"]),
    (lambda p: p["download"].update(max_extracted_gb=0), ["download.max_extracted_gb"]),
])
def test_bad_params_name_the_key(mutate, words):
    p = tiny_params()
    mutate(p)
    with pytest.raises(ParamsError) as e:
        validate_params(p)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("tool", ["snakemake", "dvc"])
def test_bad_params_stop_the_pipeline_before_any_work(data_repo, tmp_path, tool):
    """A negative beam: nothing runs, not even the stages that do not read it."""
    repo = clone(data_repo, tmp_path / tool)
    edit_params(repo, lambda p: p["decode"].update(beam_size=-5))
    before = {p: p.stat().st_mtime_ns for p in (repo / "data/synth").rglob("*") if p.is_file()}
    cmd = {"snakemake": ["snakemake", "-j", "1", "data/synth/lm"], "dvc": ["dvc", "repro", "lm"]}[tool]
    proc = run(cmd, cwd=repo, check=False, env=TRAIN_ENV)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "decode.beam_size" in log and "-5" in log, log[-3000:]
    assert not (repo / "data/synth/lm").exists()
    assert {p: p.stat().st_mtime_ns for p in (repo / "data/synth").rglob("*") if p.is_file()} == before


def test_unsafe_yaml_is_refused(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(f"dataset: !!python/object/apply:os.system ['{INJECTED}']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(f)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_yaml_is_loaded_with_the_safe_loader_everywhere():
    unsafe = re.compile(r"yaml\.(load|load_all|unsafe_load|full_load)\s*\(|Loader\s*=\s*yaml\.(Loader|FullLoader|UnsafeLoader)")
    files = [*REPO.glob("src/**/*.py"), *REPO.glob("stages/*.py"), *REPO.glob("tests/**/*.py"), *REPO.glob("bench/*.py"),
             REPO / "Snakefile"]
    hits = [f"{f.relative_to(REPO)}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
            if unsafe.search(line) and "unsafe = re.compile" not in line]
    assert not hits, hits


SECRET = "s3cret-Pa55"


def test_credentials_never_reach_logs_mlflow_params_or_reports(data_repo, tmp_path):
    """A tracking URI with a password: the stage's error names the server without it. Params
    holding a URL password or a secret-named key are recorded redacted."""
    port = free_port()
    proc = run(["python", "stages/vocab.py", "--params", "params.yaml", "--dataset", "synth", "--manifests",
                "data/synth/manifests", "--out", str(tmp_path / "vocab.txt"), "--metrics", str(tmp_path / "vocab.json")],
               cwd=data_repo, check=False,
               env={**TRAIN_ENV, "MLFLOW_TRACKING_URI": f"http://alice:{SECRET}@127.0.0.1:{port}"})
    assert proc.returncode == 2 and f"http://alice:***@127.0.0.1:{port}" in proc.stderr, proc.stderr[-2000:]
    assert SECRET not in proc.stdout + proc.stderr
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    r = StageRun("report", "synth", {"tracking_uri": uri, "artifact_root": str(tmp_path / "art")})
    r.log_params({"mlflow": {"tracking_uri": f"postgresql://bob:{SECRET}@db.example:5432/mlflow"},
                  "download": {"mirrors": [f"https://carol:{SECRET}@mirror.example/openslr"]},
                  "storage": {"api_token": SECRET, "aws_secret_access_key": SECRET}, "train": {"lr": 0.1}})
    run_id = r.flush()
    params = MlflowClient(tracking_uri=uri).get_run(run_id).data.params
    assert params["mlflow.tracking_uri"] == "postgresql://bob:***@db.example:5432/mlflow"
    assert params["download.mirrors"] == "['https://carol:***@mirror.example/openslr']"
    assert params["storage.api_token"] == params["storage.aws_secret_access_key"] == "***"
    assert params["train.lr"] == "0.1" and not any(SECRET in v for v in params.values())


def listening_addresses(port: int) -> set[str]:
    """Local addresses of TCP sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # 0A: LISTEN
                found.add(addr)
    return found


def test_make_mlflow_ui_listens_on_loopback_only(tmp_path):
    port = free_port()
    with serving(["make", "-s", "-C", str(REPO), "mlflow-ui", f"MLFLOW_PORT={port}"], tmp_path, port, timeout_s=120):
        assert listening_addresses(port) == {"0100007F"}, listening_addresses(port)  # 127.0.0.1, nothing else

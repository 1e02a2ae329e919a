"""Model packages from untrusted hands, and a registry that changes under a loading model.

A package is data plus an MLmodel file; whatever loads it (``asrflow transcribe``, a
teammate pulling ``models:/...``) must never run code the package carries. Each tampered
package below carries a payload that creates a file when it runs; the tests check the
refusal and that the file never appears. The registry test freezes ``asrflow transcribe``
(SIGSTOP from the fault-injection audit hook) at the moment it opens the checkpoint,
deletes the model version under it, then lets it go on.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from asrflow.serve.loading import load_transcriber
from asrflow.serve.package import package_model
from conftest import REPO
from processes import stopped
from serve_fixtures import SETTINGS, make_checkpoint, make_lm, sox

ASRFLOW = str(REPO / ".venv/bin/asrflow")
FAULTS = Path(__file__).parent / "faults"


class Payload:
    """Unpickling this runs ``touch <marker>``, as an attacker's pickle would run anything."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("packages")
    sox("-n", "-r", "16000", "-c", "1", "-b", "16", str(d / "tone.wav"), "synth", "1.0", "sine", "440")
    pkg = package_model(d / "pkg", make_checkpoint(d / "model.pt"), make_lm(d / "lm"), SETTINGS)
    return {"dir": d, "pkg": pkg, "wav": d / "tone.wav",
            "expected": load_transcriber(pkg).transcribe([d / "tone.wav"])[0].text}


def transcribe(model: str, wav: Path, cwd: Path, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("ASRFLOW_MODEL", "MLFLOW_TRACKING_URI")}
    return subprocess.run([ASRFLOW, "transcribe", str(wav), "--model", model, *kw.pop("extra", [])], cwd=cwd,
                          capture_output=True, text=True, timeout=180, env={**base, **(env or {})})


def tamper(pkg: Path, dest: Path, marker: Path, how: str) -> Path:
    """A copy of ``pkg`` changed the way ``how`` says, each change carrying the payload."""
    shutil.copytree(pkg, dest)
    mlmodel = yaml.safe_load((dest / "MLmodel").read_text())
    conf = mlmodel["flavors"]["python_function"]
    evil = pickle.dumps(Payload(marker))
    if how == "pickled-python-model":  # what pickling a PythonModel makes, with the pickle replaced
        (dest / "python_model.pkl").write_bytes(evil)
        conf.pop("loader_module")
        conf.pop("data")
        conf["python_model"] = "python_model.pkl"
    elif how == "other-loader":  # a loader that unpickles its data (scikit-learn's)
        (dest / "model.pkl").write_bytes(evil)
        conf.update(loader_module="mlflow.sklearn", data="model.pkl")
        mlmodel["flavors"]["sklearn"] = {"pickled_model": "model.pkl", "serialization_format": "cloudpickle"}
    elif how == "pickle-beside-the-data":
        (dest / "data/asrflow/extra.pkl").write_bytes(evil)
    elif how == "code-directory":  # a package-supplied asrflow.serve.model, first on sys.path when loaded
        code = dest / "code/asrflow/serve"
        code.mkdir(parents=True)
        for init in (code.parent / "__init__.py", code / "__init__.py"):
            init.write_text("")
        (code / "model.py").write_text(f"import os\nos.system('touch {marker}')\n")
        conf["code"] = "code"
    elif how == "data-outside":
        conf["data"] = "../../.."
    (dest / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return dest


REFUSALS = {"pickled-python-model": "carries a pickled Python object (python_model.pkl)",
            "other-loader": "carries a pickled Python object (model.pkl)",
            "pickle-beside-the-data": "carries a pickled Python object (data/asrflow/extra.pkl)",
            "code-directory": "names loader module 'asrflow.serve.model' and a code directory",
            "data-outside": "is not a directory inside the package"}


@pytest.mark.parametrize("how", list(REFUSALS))
def test_a_tampered_package_is_refused_and_nothing_in_it_runs(package, tmp_path, how):
    marker = tmp_path / "pwned"
    pkg = tamper(package["pkg"], tmp_path / "pkg", marker, how)
    proc = transcribe(str(pkg), package["wav"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"asrflow transcribe: {pkg}"), proc.stderr
    assert REFUSALS[how] in lines[0]
    assert not marker.exists(), "the package's payload ran"


def test_a_tampered_registered_model_is_refused_by_uri(package, tmp_path):
    marker = tmp_path / "pwned"
    pkg = tamper(package["pkg"], tmp_path / "pkg", marker, "pickled-python-model")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("tampered", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(pkg), "model")
    client.create_registered_model("asrflow-tampered")
    client.create_model_version("asrflow-tampered", f"runs:/{run.info.run_id}/model", run.info.run_id)
    proc = transcribe("models:/asrflow-tampered/1", package["wav"], tmp_path, extra=["--tracking-uri", uri])
    assert proc.returncode == 2 and "carries a pickled Python object" in proc.stderr, proc.stderr
    assert not marker.exists()


def test_mlflow_loads_the_genuine_package_without_any_pickle(package):
    """What a teammate does with MLflow alone: the package has no pickle and loads through
    the installed asrflow's loader module, with the same transcript."""
    pkg = package["pkg"]
    assert not [p for p in pkg.rglob("*") if p.suffix in (".pkl", ".pickle")]
    out = mlflow.pyfunc.load_model(str(pkg)).predict([str(package["wav"])])
    assert out["text"].tolist() == [package["expected"]]


@pytest.mark.parametrize("also_gc", [False, True], ids=["version-deleted", "version-and-files-deleted"])
def test_registry_version_deleted_while_transcribe_loads_it(package, tmp_path, also_gc):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("registry", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(package["pkg"]), "model")
    client.create_registered_model("asrflow-test")
    client.create_model_version("asrflow-test", f"runs:/{run.info.run_id}/model", run.info.run_id)
    model_uri = "models:/asrflow-test/1"

    fault = {"event": "open", "match": r"data/asrflow/model\.pt$", "nth": 1, "reads": True, "action": "stop"}
    base = {k: v for k, v in os.environ.items() if k not in ("ASRFLOW_MODEL", "MLFLOW_TRACKING_URI")}
    proc = subprocess.Popen([ASRFLOW, "transcribe", str(package["wav"]), "--model", model_uri, "--tracking-uri", uri],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**base, "PYTHONPATH": str(FAULTS), "ASRFLOW_FAULT": json.dumps(fault)})
    try:
        deadline = time.monotonic() + 120
        while not stopped(proc.pid):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "transcribe never opened the checkpoint"
            time.sleep(0.05)
        client.delete_model_version("asrflow-test", "1")
        if also_gc:  # what `mlflow gc` of the deleted run does to its files
            client.delete_run(run.info.run_id)
            shutil.rmtree(tmp_path / "artifacts")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=180)
    if also_gc:  # the files went away under it: one clear line naming the model, no traceback
        assert proc.returncode == 2 and out == "", err
        assert err.startswith(f"asrflow transcribe: cannot load model {model_uri}: ") and "Traceback" not in err, err
        assert len(err.splitlines()) == 1, err
    else:  # the version it resolved is still whole on disk: transcribed with exactly that model
        assert proc.returncode == 0, err
        assert out == f"{package['wav']}\t{package['expected']}\n"
    # and now the version is gone: a clear refusal before any work
    again = transcribe(model_uri, package["wav"], tmp_path, extra=["--tracking-uri", uri])
    assert again.returncode == 2 and model_uri in again.stderr and "not found" in again.stderr.lower(), again.stderr

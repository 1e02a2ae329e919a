"""MLflow tracking for stages: one run per stage, grouped per pipeline invocation.

A stage collects params, metrics and artifacts while it works and writes them in one
batch when it ends. With a SQLite store, writers from parallel stages (``snakemake -j 8``)
are serialised through an advisory file lock beside the database, so none fails with
"database is locked" and none is lost.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from asrflow.pipeline.lineage import commit_label, git_state

INVOCATION_ENV = "ASRFLOW_INVOCATION"
ORCHESTRATORS = ("snakemake", "dvc")


# user:password in a URL's authority (http://alice:s3cret@host, postgresql://u:p@db/...)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^:/?#@\s]*):(?P<secret>[^@/?#\s]+)@", re.I)
# params whose values are secrets whatever they look like: names ending in one of these words
# (api_token, aws_secret_access_key, db_password; not decode.token_beam)
SECRET_KEY = re.compile(r"(^|[_-])(password|passwd|secret|token|api[_-]?key|access[_-]?key|credentials?)$", re.I)


def redact(text: str) -> str:
    """``text`` with the passwords of any URLs in it replaced by ``***`` (for logs, MLflow, reports)."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def safe_params(params: dict[str, str]) -> dict[str, str]:
    """Flattened params as they may be recorded: secret-named keys masked, URL passwords redacted."""
    return {k: "***" if SECRET_KEY.search(k.rsplit(".", 1)[-1]) else redact(v) for k, v in params.items()}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params -> ``{"a.b": "value"}`` strings, for MLflow params."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _proc_start(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def invocation_id() -> str:
    """Id shared by every stage of one pipeline invocation.

    ``ASRFLOW_INVOCATION`` if set (the Snakefile sets it); otherwise derived from the
    nearest ancestor process that is snakemake or dvc (pid + start time), so the stages
    of one ``dvc repro`` share it too. A stage run by hand gets its own id.
    """
    if os.environ.get(INVOCATION_ENV):
        return os.environ[INVOCATION_ENV]
    pid = os.getppid()
    try:
        while pid > 1:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            names = [os.path.basename(a) for a in argv[:3]]
            for orch in ORCHESTRATORS:
                if any(n == orch or n.startswith(orch + "-") or n == f"{orch}.__main__" for n in names) or \
                        (len(argv) > 2 and argv[1] == "-m" and argv[2] == orch):
                    return f"{orch}-{socket.gethostname()}-{pid}-{_proc_start(pid)}"
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return f"standalone-{uuid.uuid4().hex[:12]}"


def tracking_uri(cfg: dict[str, Any]) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg["tracking_uri"]


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached or written."""


def check_store(cfg: dict[str, Any], timeout_s: float = 10.0) -> str:
    """Fail fast, before a stage computes anything, when its tracking store is unusable:
    a server that does not answer ``/health``, or a SQLite file whose directory cannot be
    created. Returns the URI; raises :class:`TrackingUnavailable` naming it."""
    import urllib.error
    import urllib.request

    uri = tracking_uri(cfg)
    shown = redact(uri)  # messages name the store, never its password
    hint = "set MLFLOW_TRACKING_URI or mlflow.tracking_uri in params.yaml to a reachable store"
    if uri.startswith(("http://", "https://")):
        creds = _URL_CREDENTIALS.search(uri)
        url = (uri[:creds.start("user")] + uri[creds.end():]) if creds else uri
        req = urllib.request.Request(url.rstrip("/") + "/health")
        if creds:  # as MLflow's client sends them: HTTP basic auth
            token = base64.b64encode(f"{creds['user']}:{creds['secret']}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                if r.status != 200:
                    raise TrackingUnavailable(f"MLflow tracking server {shown} answered /health with {r.status}; {hint}")
        except (urllib.error.URLError, OSError) as e:
            reason = redact(str(getattr(e, "reason", e)))
            raise TrackingUnavailable(f"MLflow tracking server {shown} is unreachable ({reason}); {hint}") from e
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingUnavailable(f"MLflow store {shown}: cannot create {db.parent} ({e}); {hint}") from e
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingUnavailable(f"MLflow store {shown} is not writable; {hint}")
    return uri


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(str(db) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class StageRun:
    """Collects what a stage wants recorded; :meth:`flush` writes one MLflow run."""

    def __init__(self, stage: str, dataset: str, cfg: dict[str, Any]):
        self.stage, self.dataset, self.cfg = stage, dataset, cfg
        self.params: dict[str, str] = {}
        self.metrics: list[tuple[str, float, int]] = []
        self.artifacts: list[Path] = []
        self.tags = {"asrflow.stage": stage, "asrflow.dataset": dataset, INVOCATION_ENV.lower(): invocation_id()}
        git = git_state()
        if git.commit:  # MLflow's own tag (the UI shows it), plus whether the tree had uncommitted changes
            self.tags.update({"mlflow.source.git.commit": git.commit, "asrflow.git_dirty": str(git.dirty).lower()})
        self.start_ms = int(time.time() * 1000)
        self.run_id: str | None = None
        self.models: list[tuple[Path, str]] = []
        self.outputs: dict[str, Any] = {}  # what flush learnt: registered model version and URI

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(safe_params(flatten(params)))

    def log_metrics(self, metrics: dict[str, Any], step: int = 0) -> None:
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            self.metrics.append((k, float(v), step))

    def log_artifact(self, path: str | Path) -> None:
        self.artifacts.append(Path(path))

    def set_tag(self, key: str, value: str) -> None:
        self.tags[key] = value

    def register_model(self, package: str | Path, name: str) -> None:
        """Log an MLflow model directory to this run (as ``model/``) and register it under
        ``name`` when the run is flushed; the new version lands in :attr:`outputs`."""
        self.models.append((Path(package), name))

    def flush(self, status: str = "FINISHED") -> str:
        """Write the run (params, metrics, tags, artifacts) in one locked batch; return its id."""
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(self.cfg)
        experiment = f"asrflow-{self.dataset}"
        with _store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                location = None  # a tracking server decides where artifacts go
                if not uri.startswith(("http://", "https://")):
                    root = Path(self.cfg["artifact_root"]).resolve()
                    root.mkdir(parents=True, exist_ok=True)
                    location = root.as_uri()
                exp_id = client.create_experiment(experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
            run = client.create_run(exp_id, start_time=self.start_ms, tags=self.tags, run_name=self.stage)
            now = int(time.time() * 1000)
            params = [Param(k, v[:6000]) for k, v in sorted(self.params.items())]
            metrics = [Metric(k, v, now, s) for k, v, s in self.metrics]
            # MLflow's limits per log_batch call: 100 params, 1000 metrics
            for i in range(0, len(params), 100):
                client.log_batch(run.info.run_id, params=params[i:i + 100])
            for i in range(0, len(metrics), 1000):
                client.log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
            for a in self.artifacts:
                if a.is_dir():
                    client.log_artifacts(run.info.run_id, str(a), a.name)
                elif a.exists():
                    client.log_artifact(run.info.run_id, str(a))
            if status == "FINISHED":
                for package, name in self.models:
                    self._register(client, run, package, name)
            client.set_terminated(run.info.run_id, status=status)
        self.run_id = run.info.run_id
        return self.run_id

    def _register(self, client: Any, run: Any, package: Path, name: str) -> None:
        client.log_artifacts(run.info.run_id, str(package), "model")
        _ensure_registered_model(client, name)
        version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                              tags={"asrflow.dataset": self.dataset})
        self.outputs.update({"model_version": int(version.version), "model_uri": f"models:/{name}/{version.version}"})


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="asrflow: CTC acoustic model + KenLM + tuned decoder "
                                                          "settings; load with `asrflow transcribe --model models:/...`")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def previous_runs(cfg: dict[str, Any], dataset: str, stage: str, limit: int = 500) -> list[dict[str, Any]]:
    """The dataset's finished runs of ``stage`` in MLflow, newest first: id, start time (ms),
    commit label, metrics and params. Empty when the store or experiment does not exist yet."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return []
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(f"asrflow-{dataset}")
        if exp is None:
            return []
        runs = client.search_runs([exp.experiment_id], max_results=limit, order_by=["attributes.start_time DESC"],
                                  filter_string=f"tags.`asrflow.stage` = '{stage}' and attributes.status = 'FINISHED'")
    out = []
    for r in runs:
        label = commit_label(r.data.tags.get("mlflow.source.git.commit"), r.data.tags.get("asrflow.git_dirty") == "true")
        out.append({"run_id": r.info.run_id, "start_time": r.info.start_time, "commit_label": label,
                    "metrics": dict(r.data.metrics), "params": dict(r.data.params)})
    return out

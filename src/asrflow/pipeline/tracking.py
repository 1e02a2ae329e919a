"""MLflow tracking for stages: one run per stage, nested under one parent run per pipeline invocation.

A stage collects params, metrics, artifacts and the manifests it read while it works and
writes them in one batch when it ends. With a SQLite store, writers from parallel stages
(``snakemake -j 8``) are serialised through an advisory file lock beside the database, so
none fails with "database is locked" and none is lost.

Every invocation (one ``snakemake`` call, one ``dvc repro``, one ``dvc exp run``) gets a
parent run, named after the DVC experiment in a ``dvc exp run``; each stage run is nested
under it (MLflow's ``mlflow.parentRunId`` tag), and the parent holds what compares one
invocation with another: the headline figures (test WER/CER per split and decoder, dev WER,
alpha, beta), the params the stages read and the params changed against git HEAD. The
experiment opens in MLflow's "Model training" view (``mlflow.experimentKind``).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
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
#: the stage runs' tag naming their invocation (``asrflow_invocation``)
STAGE_INVOCATION_TAG = INVOCATION_ENV.lower()
#: the parent run's tag naming the invocation it groups (stage runs do not carry it)
PARENT_TAG = "asrflow.invocation"
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's nesting tag: the runs table folds children under it
#: MLflow 3's experiment kind: "custom_model_development" opens it in the "Model training" view
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
#: registered-model aliases: ``candidate`` on every new version, ``champion`` on the best dev WER
CANDIDATE, CHAMPION = "candidate", "champion"


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


def is_number(value: Any) -> bool:
    """A value MLflow records as a metric: an int or float (not a boolean)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def parent_run_name(invocation: str) -> str:
    """The parent run's name: the DVC experiment's in a ``dvc exp run`` (DVC sets ``DVC_EXP_NAME``
    for the stage commands), else the orchestrator and a short id (``snakemake 3f2a9c1e``,
    ``dvc repro 0b7d51aa``); an ``ASRFLOW_INVOCATION`` set by hand names it as it is."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    head, _, rest = invocation.partition("-")
    if head not in ORCHESTRATORS:
        return invocation
    short = rest[:8] if re.fullmatch(r"[0-9a-f]{8,}", rest) else hashlib.sha1(invocation.encode()).hexdigest()[:8]
    return f"{'dvc repro' if head == 'dvc' else head} {short}"


def changed_params(params_file: str | Path) -> dict[str, tuple[str | None, str | None]] | None:
    """``{flattened key: (value at git HEAD, value now)}`` for the params that differ between
    ``params_file`` and its committed version (what ``dvc exp run -S`` changed); secrets
    masked as MLflow records them. None when the file is not in a git repository at HEAD."""
    import subprocess

    import yaml

    path = Path(params_file).resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.parent, capture_output=True,
                             text=True)
        if top.returncode != 0:
            return None
        rel = path.relative_to(Path(top.stdout.strip()).resolve()).as_posix()
        old = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=path.parent, capture_output=True, text=True)
        if old.returncode != 0:
            return None
        before = safe_params(flatten(yaml.safe_load(old.stdout) or {}))
        now = safe_params(flatten(yaml.safe_load(path.read_text()) or {}))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return {k: (before.get(k), now.get(k)) for k in sorted(before.keys() | now.keys()) if before.get(k) != now.get(k)}


def describe_changes(changes: dict[str, tuple[str | None, str | None]] | None) -> str:
    """``changed_params`` as one line: ``train.lr: 0.0015 → 0.002; ...`` (or why there is none)."""
    if changes is None:
        return "(unknown: params file not committed in git)"
    if not changes:
        return "(none: params as committed at HEAD)"
    return "; ".join(f"{k}: {'(absent)' if a is None else a} → {'(absent)' if b is None else b}"
                     for k, (a, b) in changes.items())


def _quote(value: str) -> str:
    """``value`` as a string literal of MLflow's search syntax."""
    return f'"{value}"' if "'" in value else f"'{value}'"


class StageRun:
    """Collects what a stage wants recorded; :meth:`flush` writes one MLflow run, nested under
    its invocation's parent run (found or created under a file lock in the project).

    ``params_file``: the params.yaml the stage read (the stages pass it): its changes against
    git HEAD go on the parent run, and manifest digests use the project's shared hash cache.
    """

    def __init__(self, stage: str, dataset: str, cfg: dict[str, Any], params_file: str | Path | None = None):
        self.stage, self.dataset, self.cfg = stage, dataset, cfg
        self.params_file = Path(params_file) if params_file else None
        self.params: dict[str, str] = {}
        self.metrics: list[tuple[str, float, int]] = []
        self.headline: dict[str, float] = {}  # figures for the parent run
        self.artifacts: list[Path] = []
        self.datasets: list[tuple[str, str, str, str]] = []  # (name, digest, source, context)
        invocation = invocation_id()
        self.tags = {"asrflow.stage": stage, "asrflow.dataset": dataset, STAGE_INVOCATION_TAG: invocation,
                     "mlflow.source.name": f"stages/{stage}.py", "mlflow.source.type": "LOCAL"}
        git = git_state()
        self.git = git
        if git.commit:  # MLflow's own tag (the UI shows it), plus whether the tree had uncommitted changes
            self.tags.update({"mlflow.source.git.commit": git.commit, "asrflow.git_dirty": str(git.dirty).lower()})
        self.start_ms = int(time.time() * 1000)
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        self.models: list[tuple[Path, str]] = []
        self.annotations: list[tuple[str, int, dict[str, float], float]] = []
        self.outputs: dict[str, Any] = {}  # what flush learnt: registered model version and URI, aliases

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(safe_params(flatten(params)))

    def log_metrics(self, metrics: dict[str, Any], step: int = 0) -> None:
        for k, v in metrics.items():
            if is_number(v):
                self.metrics.append((k, float(v), step))

    def log_headline(self, metrics: dict[str, Any]) -> None:
        """Figures that compare one invocation with another (test WER/CER, dev WER, alpha/beta):
        logged on the parent run when this run is flushed as finished."""
        self.headline.update({k: float(v) for k, v in metrics.items() if is_number(v)})

    def log_dataset(self, path: str | Path, context: str) -> None:
        """Record a manifest the stage read as an MLflow dataset input (the runs table's
        "Dataset" column): named ``<dataset>/<file stem>``, its digest the file's MD5 (what
        DVC records for it), its source the path, ``context`` the split (``train``, ``dev``)."""
        from asrflow.pipeline.lineage import HashCache

        p = Path(path)
        if self.params_file is not None:  # a pipeline stage: the hash cache the stages share
            from asrflow.pipeline.provenance import hash_cache
            cache = hash_cache(self.dataset, self.params_file.resolve().parent)
        else:
            cache = HashCache()
        digest = cache.md5(p)
        if self.params_file is not None:
            cache.save()
        self.datasets.append((f"{self.dataset}/{p.stem}", digest, str(path), context))

    def log_artifact(self, path: str | Path) -> None:
        self.artifacts.append(Path(path))

    def set_tag(self, key: str, value: str) -> None:
        self.tags[key] = value

    def register_model(self, package: str | Path, name: str) -> None:
        """Log an MLflow model directory to this run (as ``model/``) and register it under
        ``name`` when the run is flushed (described by commit and params, alias ``candidate``);
        the new version lands in :attr:`outputs`."""
        self.models.append((Path(package), name))

    def annotate_model_version(self, register: dict[str, Any], evaluate: dict[str, Any], dev_wer: float) -> None:
        """When the run is flushed as finished: tag the version the register stage made
        (``register``: its lineage record, ``model_name`` and ``model_version``) with the test
        WER/CER per split and decoder (``evaluate``: its metrics, nested by split) and
        ``dev_wer``, and move the ``champion`` alias to it if ``dev_wer`` is strictly below the
        current champion's (or there is none)."""
        figs = {f"{split}_{k}": float(v) for split, m in evaluate.items() if isinstance(m, dict)
                for k, v in m.items() if k.endswith(("_wer", "_cer")) and is_number(v)}
        self.annotations.append((register["model_name"], int(register["model_version"]), figs, float(dev_wer)))

    def flush(self, status: str = "FINISHED") -> str:
        """Write the run (params, metrics, tags, datasets, artifacts) in one locked batch, nested
        under the invocation's parent run, and update the parent; return the run's id."""
        from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        uri = tracking_uri(self.cfg)
        with _store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            exp_id = self._experiment(client, uri)
            tags = dict(self.tags)
            if not tags[STAGE_INVOCATION_TAG].startswith("standalone-"):  # a stage run by hand stands alone
                self.parent_run_id = self._parent(client, exp_id)
                tags[PARENT_RUN_ID] = self.parent_run_id
            run = client.create_run(exp_id, start_time=self.start_ms, tags=tags, run_name=self.stage)
            now = int(time.time() * 1000)
            params = [Param(k, v[:6000]) for k, v in sorted(self.params.items())]
            metrics = [Metric(k, v, now, s) for k, v, s in self.metrics]
            _log_batches(client, run.info.run_id, params, metrics)
            if self.datasets:
                client.log_inputs(run.info.run_id, [
                    DatasetInput(Dataset(name, digest, "local", source), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
                    for name, digest, source, context in self.datasets])
            for a in self.artifacts:
                if a.is_dir():
                    client.log_artifacts(run.info.run_id, str(a), a.name)
                elif a.exists():
                    client.log_artifact(run.info.run_id, str(a))
            if status == "FINISHED":
                for package, name in self.models:
                    self._register(client, run, package, name)
                for annotation in self.annotations:
                    self._annotate(client, *annotation)
            client.set_terminated(run.info.run_id, status=status)
            if self.parent_run_id:
                self._update_parent(client, status)
        self.run_id = run.info.run_id
        return self.run_id

    def _experiment(self, client: Any, uri: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = client.get_experiment_by_name(f"asrflow-{self.dataset}")
        if exp is None:
            location = None  # a tracking server decides where artifacts go
            if not uri.startswith(("http://", "https://")):
                root = Path(self.cfg["artifact_root"]).resolve()
                root.mkdir(parents=True, exist_ok=True)
                location = root.as_uri()
            try:
                return client.create_experiment(f"asrflow-{self.dataset}", artifact_location=location,
                                                tags=dict([EXPERIMENT_KIND]))
            except MlflowException as e:  # a tracking server has no shared lock: another stage made it first
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = client.get_experiment_by_name(f"asrflow-{self.dataset}")
        if EXPERIMENT_KIND[0] not in exp.tags:  # made before the kind was set (or by hand): leave a kind chosen in the UI
            client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id

    def _parent(self, client: Any, exp_id: str) -> str:
        """The id of the invocation's parent run, created if no stage made it yet.

        Search-then-create runs under a file lock in the project (``cache/<dataset>/
        mlflow-parent.lock``, beside the params file the stage read), so it is atomic for
        every stage of the invocation whatever the store: a SQLite file or a tracking server
        that stages on several nodes flush to at the same moment. (Snakemake on a cluster
        needs the project on a shared file system anyway; the lock needs that file system to
        honour ``flock``, as NFSv4 and Lustre do.)"""
        root = self.params_file.resolve().parent if self.params_file else Path.cwd()
        lock = root / "cache" / self.dataset / "mlflow-parent.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                return self._find_or_create_parent(client, exp_id)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _find_or_create_parent(self, client: Any, exp_id: str) -> str:
        invocation = self.tags[STAGE_INVOCATION_TAG]
        runs = client.search_runs([exp_id], filter_string=f"tags.`{PARENT_TAG}` = {_quote(invocation)}",
                                  max_results=100)
        if runs:  # more than one only if made outside this lock (by hand): the oldest
            return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id
        exp_name = os.environ.get("DVC_EXP_NAME")
        changes = changed_params(self.params_file) if self.params_file else None
        orchestrator = invocation.partition("-")[0]
        tags = {PARENT_TAG: invocation, "asrflow.dataset": self.dataset,
                "asrflow.changed_params": describe_changes(changes)[:5000],
                "mlflow.source.name": {"snakemake": "Snakefile", "dvc": "dvc.yaml"}.get(orchestrator, "asrflow"),
                "mlflow.source.type": "LOCAL",
                "mlflow.note.content": f"One pipeline invocation ({invocation}); its stage runs are nested under "
                                       f"this run. Params changed against git HEAD: {describe_changes(changes)}"[:5000]}
        if orchestrator in ORCHESTRATORS:
            tags["asrflow.orchestrator"] = orchestrator
        if exp_name:
            tags.update({"asrflow.dvc_experiment": exp_name,
                         "asrflow.dvc_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", "")})
        for key in ("mlflow.source.git.commit", "asrflow.git_dirty"):
            if key in self.tags:
                tags[key] = self.tags[key]
        return client.create_run(exp_id, start_time=self.start_ms, tags=tags,
                                 run_name=parent_run_name(invocation)).info.run_id

    def _update_parent(self, client: Any, status: str) -> None:
        """The stage's params and headline figures onto the parent, and its status: FINISHED
        (ended now) after each stage that finished, so an invocation that stops short of the
        report is not left RUNNING forever; FAILED or KILLED, for good, once a stage was.

        Stages of one invocation log the same params to the parent, at the same moment under
        a tracking server (no shared lock): a batch that meets another stage's write is
        retried against the parent as it is then. A value that differs from the one already
        there (params.yaml edited during the invocation; MLflow params cannot change) is
        named in the stage's own tag, ``asrflow.params_differ.<stage>``."""
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException

        params = {k: v[:6000] for k, v in self.params.items()}
        for attempt in range(5):
            have = client.get_run(self.parent_run_id).data.params
            try:
                _log_batches(client, self.parent_run_id, [Param(k, v) for k, v in sorted(params.items())
                                                          if k not in have], [])
                break
            except MlflowException:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        differ = sorted(k for k, v in params.items() if k in have and have[k] != v)
        if differ:
            client.set_tag(self.parent_run_id, f"asrflow.params_differ.{self.stage}", ", ".join(differ)[:5000])
        now = int(time.time() * 1000)
        if status != "FINISHED":
            client.set_terminated(self.parent_run_id, status=status, end_time=now)
            return
        _log_batches(client, self.parent_run_id, [], [Metric(k, v, now, 0) for k, v in sorted(self.headline.items())])
        if client.get_run(self.parent_run_id).info.status not in ("FAILED", "KILLED"):
            client.set_terminated(self.parent_run_id, status="FINISHED", end_time=now)

    def _register(self, client: Any, run: Any, package: Path, name: str) -> None:
        client.log_artifacts(run.info.run_id, str(package), "model")
        _ensure_registered_model(client, name)
        version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                              tags={"asrflow.dataset": self.dataset},
                                              description=self._version_description())
        client.set_registered_model_alias(name, CANDIDATE, version.version)
        self.outputs.update({"model_version": int(version.version), "model_uri": f"models:/{name}/{version.version}"})

    def _version_description(self) -> str:
        commit = self.tags.get("mlflow.source.git.commit")
        built = f"git commit {commit}" + (" with uncommitted changes" if self.git.dirty else "") if commit \
            else "no git commit"
        changes = describe_changes(changed_params(self.params_file)) if self.params_file else "(unknown)"
        settings = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return (f"Built from {built} (invocation {self.tags[STAGE_INVOCATION_TAG]}, parent run "
                f"{self.parent_run_id or '-'}). Params changed against HEAD: {changes}. "
                f"Register's params: {settings}.")[:5000]

    def _annotate(self, client: Any, name: str, version: int, figures: dict[str, float], dev_wer: float) -> None:
        from mlflow.exceptions import MlflowException

        for k, v in {**figures, "dev_wer": dev_wer}.items():
            client.set_model_version_tag(name, str(version), k, repr(v))
        try:
            champion = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:  # no champion yet
            champion = None
        best = champion.tags.get("dev_wer") if champion is not None else None
        # a champion with no recorded dev WER (registered before the tag existed) cannot be compared: replaced
        moved = champion is None or (int(champion.version) != version and (best is None or dev_wer < float(best)))
        if moved:
            client.set_registered_model_alias(name, CHAMPION, str(version))
        self.outputs.update({"champion_version": version if moved else int(champion.version),
                             "champion_moved": moved})


def _log_batches(client: Any, run_id: str, params: list[Any], metrics: list[Any]) -> None:
    # MLflow's limits per log_batch call: 100 params, 1000 metrics
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


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

"""The pipeline, defined once: both the Snakefile and dvc.yaml are rendered from here.

Each :class:`Stage` names its command, dependencies, outputs, params keys, metrics and
plots with two kinds of placeholder:

- ``{dataset}``: a Snakemake wildcard in paths (``${dataset}`` from params.yaml in dvc.yaml);
- ``{key.path}``: a params.yaml value.

Neither orchestrator pastes values into a shell line: both run
``python -m asrflow.pipeline.launch [--dataset NAME] '<command template>'``, which fills the
placeholders in word by word and execs the command (:mod:`asrflow.pipeline.launch`), so a params
value holding shell metacharacters stays data. The template is part of the command line,
so DVC still sees a stage as changed when its command changes.

dvc.yaml is generated (``python -m asrflow.pipeline > dvc.yaml``); tests check it is
current and that Snakemake's view of every rule matches it.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

PY = "python"
LAUNCH = "python -m asrflow.pipeline.launch"


@dataclass(frozen=True)
class Stage:
    """One stage: its entry point ``stages/<name>.py`` takes ``args`` (option -> path, in
    command order); ``deps`` are the paths it reads, ``outs`` the products it writes (each
    also one of ``args``' values, or a file written beside one), ``params`` the params.yaml
    keys it reads (``{dataset}`` in a key: the dataset's own entry, so a key of another
    dataset leaves the stage alone). A stage reads params.yaml through a view that refuses any
    other key and records what it read (:class:`asrflow.pipeline.config.ParamsView`), so a
    stage cannot depend on a key that neither orchestrator watches, and the pipeline's tests
    check that it reads every key declared here. A trailing '/' marks a directory. Its code dependencies are derived from
    what its entry point imports (:func:`code_deps`). ``all_cores``: the stage uses every
    core it is given (Snakemake's ``threads``); ``resources``: extra Snakemake resources."""

    name: str
    args: dict[str, str]
    deps: list[str]
    outs: list[str]
    params: list[str]
    metrics: list[str] = field(default_factory=list)
    #: the figures its DVC metrics file holds (fnmatch patterns over dotted keys, e.g.
    #: ``test.beam_wer``): those a run is compared by in ``dvc exp show``/``dvc metrics diff``;
    #: its other figures (counts, sizes, real-time factors) go to its lineage record and MLflow
    compared: tuple[str, ...] = ()
    plots: list[str] = field(default_factory=list)  # data files the top-level PLOTS draw
    launcher: str = PY
    all_cores: bool = False
    resources: dict[str, int] = field(default_factory=dict)

    def compares(self, key: str) -> bool:
        """Whether the figure ``key`` (dotted) belongs in the stage's DVC metrics file."""
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.compared)

    def keys(self, dataset: str, params: dict[str, Any]) -> list[str]:
        """The params.yaml keys the stage reads for ``dataset``, with ``{key.path}`` in a key
        filled from ``params`` (``model.{model.family}``: the chosen family's block only)."""
        return [re.sub(r"\{([a-z_.]+)\}", lambda m: str(lookup(params, m.group(1))), k.replace("{dataset}", dataset))
                for k in self.params]

    @property
    def log(self) -> str:
        """The stage's own log (it writes it under either orchestrator; Snakemake's ``log:``)."""
        return f"logs/{{dataset}}/{self.name}.log"

    @property
    def lineage(self) -> str:
        """The stage's lineage record: what a run was besides its figures (MLflow run id, git
        commit, timings, names, paths, versions). Outside ``metrics/``, so DVC's metrics views
        (``dvc metrics``, ``dvc exp show``) hold figures only."""
        return f"{LINEAGE}/{self.name}.json"

    @property
    def cmd(self) -> str:
        """The command template (placeholders: ``{dataset}``, ``{key.path}``; see asrflow.pipeline.launch)."""
        opts = [f"--{k} {v.rstrip('/')}" for k, v in self.args.items()]
        return " ".join([self.launcher, f"stages/{self.name}.py", "--params params.yaml --dataset {dataset}",
                         f"--log-file {self.log}", f"--lineage-file {self.lineage}", *opts])

    @property
    def code(self) -> list[str]:
        return code_deps(f"stages/{self.name}.py")

    @property
    def all_deps(self) -> list[str]:
        return [f"stages/{self.name}.py", *self.code, *self.deps]

    @property
    def all_outs(self) -> list[str]:
        return [*self.outs, *self.metrics, *self.plots, self.lineage]

    def output_options(self) -> list[tuple[str, bool]]:
        """The options (argparse names) whose values are this stage's products, other than its
        metrics, each with whether it is a directory: what the stage kit builds so that
        nothing partial looks complete."""
        outs = {o.rstrip("/"): o.endswith("/") for o in [*self.outs, *self.plots]}
        return [(k.replace("-", "_"), outs[v.rstrip("/")]) for k, v in self.args.items() if v.rstrip("/") in outs]


# ---------------------------------------------------------------------- code dependencies

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src"
# The machinery every stage runs through the same way (arguments, validation, launch, the
# stage table itself): it records and publishes a stage's products but does not shape them,
# so editing it does not make every stage stale. Everything else a stage imports is its code.
MACHINERY = ("asrflow.pipeline.stagekit", "asrflow.pipeline.definition", "asrflow.pipeline.launch",
             "asrflow.pipeline.config", "asrflow.pipeline.__main__")


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imported(tree: ast.AST) -> set[str]:
    """asrflow modules a module imports, anywhere in it (lazy imports inside functions too;
    asrflow uses absolute imports only, which tests/test_layout.py checks)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)  # `from asrflow.x import y`: y may be a module itself
            out.update(f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}"))
    return {m for m in out if m == "asrflow" or m.startswith("asrflow.")}


@functools.lru_cache(maxsize=None)
def code_deps(entry_point: str) -> list[str]:
    """The files whose code a stage runs: every asrflow module its entry point imports,
    transitively (with the packages' ``__init__`` files and the package data files a module
    names, such as the synth word lists), except the shared :data:`MACHINERY`. Paths are
    relative to the repository, sorted."""
    files: set[Path] = set()
    todo = list(_imported(ast.parse((REPO / entry_point).read_text())))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name in MACHINERY:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
            todo.append(".".join(parts[:i]))
        f = _module_file(name)
        if f is None:
            continue
        files.add(f)
        source = f.read_text()
        files.update(d for d in f.parent.iterdir() if d.suffix in (".yaml", ".txt", ".json") and d.name in source)
        todo.extend(_imported(ast.parse(source)))
    return sorted(str(f.relative_to(REPO)) for f in files)


ARCH, RAW, MAN = "data/{dataset}/archives", "data/{dataset}/raw", "data/{dataset}/manifests"
STATS, VOCAB, LM = "data/{dataset}/stats.json", "data/{dataset}/vocab.txt", "data/{dataset}/lm"
MODEL, TUNE, EVAL = "models/{dataset}", "results/{dataset}/tune", "results/{dataset}/evaluate"
MET, PLOTS, PACKAGE = "metrics/{dataset}", "plots/{dataset}", "models/{dataset}_mlflow"
CACHE = "cache/{dataset}"
# each stage's lineage record (Stage.lineage): committed with the metrics, but not a DVC metric
LINEAGE = "lineage/{dataset}"
# reports/<dataset>_wer.md and the figures it embeds by relative path
REPORT_FILES = (".md", "_surface.png", "_curve.png", "_duration.png")

STAGES: list[Stage] = [
    # synth: espeak-ng processes on every core; net: one download at a time per host
    Stage("download", {"out": f"{ARCH}/", "store": "downloads/{dataset}", "metrics": f"{MET}/download.json"},
          deps=[], outs=[f"{ARCH}/"], params=["seed", "datasets.{dataset}", "features.sample_rate"],
          metrics=[f"{MET}/download.json"], compared=("utterances_*", "speakers_*"), all_cores=True, resources={"net": 1}),
    # extraction, then header probes on every core. The model's time geometry (its family's
    # `subsampling`) decides which utterances are too short for their label.
    Stage("manifest", {"archives": f"{ARCH}/", "raw": RAW, "out": f"{MAN}/", "metrics": f"{MET}/manifest.json"},
          deps=[f"{ARCH}/"], outs=[f"{MAN}/"],
          params=["datasets.{dataset}.source", "datasets.{dataset}.language", "datasets.{dataset}.splits",
                  "datasets.{dataset}.resample", "manifest", "download.max_extracted_gb", "features.sample_rate",
                  "features.hop_ms", "model.family", "model.{model.family}.subsampling"],
          metrics=[f"{MET}/manifest.json"], all_cores=True,
          compared=("*_hours", "*_utterances", "*_speakers", "*_in_train", "rejected*")),
    Stage("stats", {"manifests": f"{MAN}/", "out": STATS, "metrics": f"{MET}/stats.json"},
          deps=[f"{MAN}/"], outs=[STATS], params=["seed", "features", "stats"], metrics=[f"{MET}/stats.json"],
          compared=("utterances", "frames")),
    Stage("vocab", {"manifests": f"{MAN}/", "out": VOCAB, "metrics": f"{MET}/vocab.json"},
          deps=[f"{MAN}/"], outs=[VOCAB], params=["vocab", "datasets.{dataset}.language"], metrics=[f"{MET}/vocab.json"],
          compared=("tokens", "*_unknown_char_rate")),
    Stage("lm", {"archives": f"{ARCH}/", "manifests": f"{MAN}/", "vocab": VOCAB, "out": f"{LM}/",
                 "metrics": f"{MET}/lm.json"},
          deps=[f"{ARCH}/", f"{MAN}/", VOCAB], outs=[f"{LM}/"],
          params=["datasets.{dataset}.splits", "datasets.{dataset}.language", "lm"], metrics=[f"{MET}/lm.json"],
          compared=("*perplexity", "dev_oov_rate", "test_oov_rate", "ngrams", "char_ngrams")),
    # torch uses every core on CPU. One node: rendezvous on a free local port; several: the
    # same command on every node with train.nnodes and a reachable train.rdzv_endpoint (host:port)
    Stage("train", {"manifests": f"{MAN}/", "stats": STATS, "vocab": VOCAB, "out": f"{MODEL}/",
                    "checkpoints": "checkpoints/{dataset}", "metrics": f"{MET}/train.json",
                    "plots": f"{PLOTS}/learning_curve.csv"},
          deps=[f"{MAN}/", STATS, VOCAB], outs=[f"{MODEL}/"],
          params=["seed", "features", "model.family", "model.{model.family}", "train",
                  "train_per_family.{model.family}", "train_per_dataset.{dataset}"],
          metrics=[f"{MET}/train.json"], plots=[f"{PLOTS}/learning_curve.csv"], all_cores=True,
          compared=("best_dev_wer", "best_dev_cer", "params", "train_audio_s_per_s"),
          launcher="torchrun --nnodes={train.nnodes} --nproc-per-node={train.nproc_per_node} "
                   "--rdzv-backend=asrflow --rdzv-endpoint={train.rdzv_endpoint} --rdzv-id=asrflow-{dataset}"),
    # one decoder process per core
    Stage("tune", {"manifests": f"{MAN}/", "model": f"{MODEL}/", "lm": f"{LM}/", "cache": CACHE, "out": f"{TUNE}/",
                   "metrics": f"{MET}/tune.json", "plots": f"{PLOTS}/tune_grid.csv"},
          deps=[f"{MAN}/", f"{MODEL}/", f"{LM}/"], outs=[f"{TUNE}/"],
          params=["datasets.{dataset}.language", "decode", "tune", "lm.char_order"],
          metrics=[f"{MET}/tune.json"], plots=[f"{PLOTS}/tune_grid.csv"], all_cores=True,
          compared=("alpha", "beta", "dev_wer", "dev_cer")),
    Stage("evaluate", {"manifests": f"{MAN}/", "model": f"{MODEL}/", "lm": f"{LM}/", "tune": f"{TUNE}/",
                       "cache": CACHE, "out": f"{EVAL}/", "metrics": f"{MET}/evaluate.json",
                       "plots": f"{PLOTS}/wer_by_duration.csv"},
          deps=[f"{MAN}/", f"{MODEL}/", f"{LM}/", f"{TUNE}/"], outs=[f"{EVAL}/"],
          params=["datasets.{dataset}.splits", "decode", "evaluate.max_utterances",
                  "evaluate.duration_bins"], metrics=[f"{MET}/evaluate.json"],
          compared=("*_wer", "*_cer", "*.utterances", "*.words"),
          plots=[f"{PLOTS}/wer_by_duration.csv"]),
    # The model, its LM and tuned decoder settings as one MLflow model: saved here, logged to
    # the stage's MLflow run and registered as asrflow-<dataset> (a new version per run).
    Stage("register", {"model": f"{MODEL}/", "lm": f"{LM}/", "tune": f"{TUNE}/", "out": f"{PACKAGE}/",
                       "metrics": f"{MET}/register.json"},
          deps=[f"{MODEL}/", f"{LM}/", f"{TUNE}/"], outs=[f"{PACKAGE}/"], params=["decode"],
          metrics=[f"{MET}/register.json"], compared=("package_mb",)),
    # Lineage: the report states the DVC hashes of manifests, vocab, LM and model, so it depends on them.
    Stage("report", {"metrics-dir": MET, "lineage-dir": LINEAGE, "plots-dir": PLOTS, "results": f"{EVAL}/",
                     "manifests": f"{MAN}/",
                     "vocab": VOCAB, "lm": f"{LM}/", "model": f"{MODEL}/", "cache": CACHE,
                     "out": "reports/{dataset}_wer.md"},
          deps=[f"{MET}/manifest.json", f"{MET}/lm.json", f"{MET}/train.json", f"{MET}/tune.json",
                f"{MET}/evaluate.json", f"{MET}/register.json",
                *(f"{LINEAGE}/{s}.json" for s in ("manifest", "lm", "train", "tune", "evaluate", "register")),
                f"{PLOTS}/learning_curve.csv",
                f"{PLOTS}/tune_grid.csv", f"{PLOTS}/wer_by_duration.csv", f"{EVAL}/", f"{MAN}/", VOCAB, f"{LM}/",
                f"{MODEL}/"],
          outs=[f"reports/{{dataset}}_wer{suffix}" for suffix in REPORT_FILES],
          params=["datasets.{dataset}.splits", "datasets.{dataset}.language", "evaluate.top_errors"]),
]
BY_NAME = {s.name: s for s in STAGES}

# How DVC draws the stages' plot data (`dvc plots show` / `dvc plots diff`): top-level plots.
PLOT_DEFS: list[dict[str, Any]] = [
    {"Learning curve: dev error rates (%) by epoch": {
        "template": "linear", "x": "epoch", "y": {f"{PLOTS}/learning_curve.csv": ["dev_cer", "dev_wer"]}}},
    {"Learning curve: training CTC loss by epoch": {
        "template": "linear", "x": "epoch", "y": {f"{PLOTS}/learning_curve.csv": "train_loss"}}},
    {"Tuning: dev WER (%) over alpha, one point per beta": {
        "template": "scatter", "x": "alpha", "y": {f"{PLOTS}/tune_grid.csv": "wer"}}},
    # the bins are categories, drawn in their labels' order: labels zero-padded to sort as numbers
    {"Test WER (%) by utterance duration, beam+LM": {
        "template": "bar_horizontal", "x": "beam_wer", "y": {f"{PLOTS}/wer_by_duration.csv": "bin"}}},
]


def stage(name: str) -> Stage:
    return BY_NAME[name]


def lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def launch_cmd(name: str) -> str:
    """The stage's command as DVC runs it (dataset from params.yaml): see :mod:`asrflow.pipeline.launch`."""
    return f"{LAUNCH} {shlex.quote(stage(name).cmd)}"


# ------------------------------------------------------------------------------- DVC

def _dvc(path: str) -> str:
    """A path or params key in DVC's templating: ``{x}`` -> ``${x}`` (from params.yaml)."""
    return re.sub(r"\{([a-z_.]+)\}", r"${\1}", path).rstrip("/")


def dvc_yaml() -> dict[str, Any]:
    """The dvc.yaml mapping for every stage (dataset from params.yaml via templating)."""
    stages = {}
    for s in STAGES:
        entry: dict[str, Any] = {"cmd": launch_cmd(s.name),
                                 "deps": [_dvc(d) for d in s.all_deps]}
        if s.params:
            entry["params"] = [_dvc(k) for k in s.params]
        entry["outs"] = [_dvc(o) for o in s.outs]
        if s.metrics:
            entry["metrics"] = [{_dvc(m): {"cache": False}} for m in s.metrics]
        # plot data are small uncached outputs; how to draw them is in the top-level plots
        entry["outs"] += [{_dvc(p): {"cache": False}} for p in s.plots]
        # so is the lineage record, committed to git beside the metrics (but not one: no figures)
        entry["outs"].append({_dvc(s.lineage): {"cache": False}})
        stages[s.name] = entry
    plots = [{_dvc(title): {k: ({_dvc(f): cols for f, cols in v.items()} if k == "y" else v)
                            for k, v in spec.items()}} for d in PLOT_DEFS for title, spec in d.items()]
    return {"stages": stages, "plots": plots}


def render_dvc_yaml() -> str:
    header = ("# GENERATED from src/asrflow/pipeline.py by `python -m asrflow.pipeline > dvc.yaml`.\n"
              "# Do not edit: change the pipeline definition, then regenerate (a test checks this file is current).\n")
    return header + yaml.safe_dump(dvc_yaml(), sort_keys=False, width=120)


# ------------------------------------------------------------------------- Snakemake

def smk_inputs(name: str) -> list[str]:
    return [d.rstrip("/") for d in stage(name).all_deps]


def smk_outputs(name: str, directory: Callable[[str], Any], report: Callable[..., Any] | None = None,
                report_items: dict[str, tuple[str, str]] | None = None) -> list[Any]:
    """The stage's outputs for a Snakemake rule; those in ``report_items`` (output ->
    (category, caption file)) are registered with Snakemake's ``report()`` for ``--report``."""
    items = report_items or {}
    outs = []
    for o in stage(name).all_outs:
        if o.endswith("/"):
            outs.append(directory(o.rstrip("/")))
        elif o in items and report is not None:
            category, caption = items[o]
            outs.append(report(o, category=category, caption=caption))
        else:
            outs.append(o)
    return outs


# Every rule's shell line: the launcher with the dataset wildcard and the rule's command template
# (params.template, shell-quoted); the stage writes the rule's log itself (--log), as under DVC.
# One constant for all rules: Snakemake evaluates a `shell:` expression when the job runs, after
# the loop that defines the rules has moved on, so it must not refer to the loop's variable.
SMK_SHELL = f"{LAUNCH} --dataset {{wildcards.dataset:q}} {{params.template:q}}"


def smk_template(name: str) -> Callable[[Any], str]:
    """The stage's command template as a rule's ``params.template``: a function, since
    Snakemake would read the template's placeholders in a params string as wildcards."""
    cmd = stage(name).cmd
    return lambda wildcards: cmd


def smk_resources(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The stage's job resources from params.yaml's ``cluster`` block, in the names Snakemake's
    Slurm executor reads (``runtime`` minutes, ``mem_mb``, ``cpus_per_task``,
    ``slurm_partition``). Training adds ``nodes`` (train.nnodes) and ``gpu``: all the GPUs it
    uses, train.nnodes x train.nproc_per_node (0 on CPU), which also keeps a local
    ``snakemake --resources gpu=N`` from oversubscribing a machine."""
    job = {**config["cluster"]["default"], **config["cluster"].get(name, {})}
    res = {k: job[c] for k, c in (("runtime", "runtime"), ("mem_mb", "mem_mb"), ("cpus_per_task", "cpus"))
           if job.get(c) is not None}
    if job.get("partition"):
        res["slurm_partition"] = job["partition"]
    if name == "train":
        t = config["train"]
        res["nodes"] = t["nnodes"]
        res["gpu"] = t["nnodes"] * t["nproc_per_node"] if t["device"] != "cpu" else 0
    return res


def smk_params(name: str, config: dict[str, Any], dataset: str) -> str:
    """The values of the keys a stage reads for ``dataset``, as canonical JSON (Snakemake
    re-runs a rule when it changes)."""
    return json.dumps({k: lookup(config, k) for k in stage(name).keys(dataset, config)}, sort_keys=True)


def smk_values(name: str, config: dict[str, Any]) -> Callable[[Any], str]:
    """A rule's ``params.values``: :func:`smk_params` for the job's dataset wildcard."""
    return lambda wildcards: smk_params(name, config, wildcards.dataset)


def timed_out_jobs(config: dict[str, Any], since: float, root: Path = Path(".")) -> list[tuple[str, int]]:
    """(stage, its ``cluster`` runtime in minutes) for each Slurm job of this invocation (its log
    written after ``since``, a time.time()) that Slurm stopped at its time limit: Slurm says so
    only in the job's own log, as ``*** JOB <id> ON <node> CANCELLED AT <time> DUE TO TIME LIMIT ***``."""
    out = []
    for s in STAGES:
        logs = (root / ".snakemake/slurm_logs" / f"rule_{s.name}").rglob("*.log")
        if any(f.stat().st_mtime >= since and "DUE TO TIME LIMIT" in f.read_text(errors="replace") for f in logs):
            job = {**config["cluster"]["default"], **config["cluster"].get(s.name, {})}
            out.append((s.name, job.get("runtime")))
    return out


def overridden_keys(config: dict[str, Any], params_path: str | Path) -> list[str]:
    """The dotted keys whose value in Snakemake's ``config`` differs from params.yaml on disk
    (what ``--config``/``--configfile`` changed), sorted."""
    disk = yaml.safe_load(Path(params_path).read_text())

    def walk(a: Any, b: Any, prefix: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [k for key in sorted(set(a) | set(b), key=str)
                    for k in walk(a.get(key), b.get(key), f"{prefix}{key}.")]
        return [] if a == b else [prefix.rstrip(".")]

    return walk(config, disk, "")


def dvc_commit(config: dict[str, Any], root: Path = Path(".")) -> list[str]:
    """Record finished stages of params.yaml's dataset in dvc.lock (after a Snakemake run).

    Only stages whose outputs all exist are committed; returns their names.
    """
    ds = config["dataset"]
    ready = [s.name for s in STAGES
             if all((root / o.replace("{dataset}", ds).rstrip("/")).exists() for o in s.all_outs)]
    if ready:
        # dvc commit links outputs to its cache and gives the files it (re)links a new
        # modification time; Snakemake judges by those times, so a later run would take an
        # upstream file for new and re-run what reads it. The times are put back.
        times = _mtimes([root / o.replace("{dataset}", ds).rstrip("/") for s in STAGES if s.name in ready
                         for o in s.all_outs])
        subprocess.run(["dvc", "commit", "--force", "--quiet", *ready], cwd=root, check=True)
        for path, (atime, mtime) in times.items():
            try:
                os.utime(path, ns=(atime, mtime), follow_symlinks=False)
            except OSError:  # gone or not ours to touch: nothing to restore
                pass
    return ready


def _mtimes(paths: list[Path]) -> dict[Path, tuple[int, int]]:
    """(atime, mtime) in ns of every file under ``paths`` (files and directories)."""
    out = {}
    for p in paths:
        for f in ([p] if not p.is_dir() else [q for q in p.rglob("*") if q.is_file()]):
            st = f.stat()
            out[f] = (st.st_atime_ns, st.st_mtime_ns)
    return out


if __name__ == "__main__":
    sys.stdout.write(render_dvc_yaml())

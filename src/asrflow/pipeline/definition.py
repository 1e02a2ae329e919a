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

import json
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
    name: str
    cmd: str
    deps: list[str]
    outs: list[str]                      # a trailing '/' marks a directory
    params: list[str]
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # data files the top-level PLOTS draw
    code: list[str] = field(default_factory=list)

    @property
    def all_deps(self) -> list[str]:
        return [f"stages/{self.name}.py", *self.code, *self.deps]

    @property
    def all_outs(self) -> list[str]:
        return [*self.outs, *self.metrics, *self.plots]


def _cmd(name: str, *args: str, launcher: str = PY) -> str:
    return " ".join([launcher, f"stages/{name}.py", "--params params.yaml --dataset {dataset}", *args])


ARCH, RAW, MAN = "data/{dataset}/archives", "data/{dataset}/raw", "data/{dataset}/manifests"
STATS, VOCAB, LM = "data/{dataset}/stats.json", "data/{dataset}/vocab.txt", "data/{dataset}/lm"
MODEL, TUNE, EVAL = "models/{dataset}", "results/{dataset}/tune", "results/{dataset}/evaluate"
MET, PLOTS, PACKAGE = "metrics/{dataset}", "plots/{dataset}", "models/{dataset}_mlflow"
# reports/<dataset>_wer.md and the figures it embeds by relative path
REPORT_FILES = (".md", "_surface.png", "_curve.png", "_duration.png")
LIB = "src/asrflow"

STAGES: list[Stage] = [
    Stage("download",
          _cmd("download", f"--out {ARCH} --store downloads/{{dataset}} --metrics {MET}/download.json"),
          deps=[], outs=[f"{ARCH}/"], params=["seed", "datasets", "download", "features.sample_rate"],
          metrics=[f"{MET}/download.json"],
          code=[f"{LIB}/data/synth.py", f"{LIB}/data/synth_text.py", f"{LIB}/data/librispeech.py", f"{LIB}/data/archives.py"]),
    Stage("manifest",
          _cmd("manifest", f"--archives {ARCH} --raw {RAW} --out {MAN} --metrics {MET}/manifest.json"),
          deps=[f"{ARCH}/"], outs=[f"{MAN}/"],
          # the conv front end's time geometry decides which utterances are too short for their label
          params=["datasets", "manifest", "features.sample_rate", "features.hop_ms", "train.conv_kernel",
                  "train.conv_strides"],
          metrics=[f"{MET}/manifest.json"], code=[f"{LIB}/data/manifest.py", f"{LIB}/data/archives.py"]),
    Stage("stats",
          _cmd("stats", f"--manifests {MAN} --out {STATS}"),
          deps=[f"{MAN}/"], outs=[STATS], params=["seed", "features", "stats"], code=[f"{LIB}/features/logmel.py"]),
    Stage("vocab",
          _cmd("vocab", f"--manifests {MAN} --out {VOCAB}"),
          deps=[f"{MAN}/"], outs=[VOCAB], params=["vocab"], code=[f"{LIB}/text/vocab.py"]),
    Stage("lm",
          _cmd("lm", f"--archives {ARCH} --manifests {MAN} --vocab {VOCAB} --out {LM} --metrics {MET}/lm.json"),
          deps=[f"{ARCH}/", f"{MAN}/", VOCAB], outs=[f"{LM}/"], params=["lm"],
          metrics=[f"{MET}/lm.json"], code=[f"{LIB}/text/lm.py"]),
    Stage("train",
          _cmd("train", f"--manifests {MAN} --stats {STATS} --vocab {VOCAB} --out {MODEL} "
                        f"--checkpoints checkpoints/{{dataset}} --metrics {MET}/train.json "
                        f"--plots {PLOTS}/learning_curve.csv",
               # one node: rendezvous on a free local port; several: the same command on every
               # node with train.nnodes and a reachable train.rdzv_endpoint (host:port)
               launcher="torchrun --nnodes={train.nnodes} --nproc-per-node={train.nproc_per_node} "
                        "--rdzv-backend=c10d --rdzv-endpoint={train.rdzv_endpoint} --rdzv-id=asrflow-{dataset}"),
          deps=[f"{MAN}/", STATS, VOCAB], outs=[f"{MODEL}/"], params=["seed", "features", "train"],
          metrics=[f"{MET}/train.json"], plots=[f"{PLOTS}/learning_curve.csv"],
          code=[f"{LIB}/train/loop.py", f"{LIB}/models/deepspeech2.py"]),
    Stage("tune",
          _cmd("tune", f"--manifests {MAN} --model {MODEL} --lm {LM} --cache cache/{{dataset}} --out {TUNE} "
                       f"--metrics {MET}/tune.json --plots {PLOTS}/tune_grid.csv"),
          deps=[f"{MAN}/", f"{MODEL}/", f"{LM}/"], outs=[f"{TUNE}/"], params=["decode", "tune"],
          metrics=[f"{MET}/tune.json"], plots=[f"{PLOTS}/tune_grid.csv"],
          code=[f"{LIB}/decode/search.py", f"{LIB}/decode/beam.py"]),
    Stage("evaluate",
          _cmd("evaluate", f"--manifests {MAN} --model {MODEL} --lm {LM} --tune {TUNE} --cache cache/{{dataset}} "
                           f"--out {EVAL} --metrics {MET}/evaluate.json --plots {PLOTS}/wer_by_duration.csv"),
          deps=[f"{MAN}/", f"{MODEL}/", f"{LM}/", f"{TUNE}/"], outs=[f"{EVAL}/"],
          params=["datasets", "decode", "evaluate"], metrics=[f"{MET}/evaluate.json"],
          plots=[f"{PLOTS}/wer_by_duration.csv"],
          code=[f"{LIB}/decode/beam.py", f"{LIB}/scoring/metrics.py", f"{LIB}/scoring/results.py"]),
    # The model, its LM and tuned decoder settings as one MLflow model: saved here, logged to
    # the stage's MLflow run and registered as asrflow-<dataset> (a new version per run).
    Stage("register",
          _cmd("register", f"--model {MODEL} --lm {LM} --tune {TUNE} --out {PACKAGE} --metrics {MET}/register.json"),
          deps=[f"{MODEL}/", f"{LM}/", f"{TUNE}/"], outs=[f"{PACKAGE}/"], params=["decode"],
          metrics=[f"{MET}/register.json"], code=[f"{LIB}/serve/model.py"]),
    # Lineage: the report states the DVC hashes of manifests, vocab, LM and model, so it depends on them.
    Stage("report",
          _cmd("report", f"--metrics-dir {MET} --plots-dir {PLOTS} --results {EVAL} --manifests {MAN} "
                         f"--vocab {VOCAB} --lm {LM} --model {MODEL} --cache cache/{{dataset}} "
                         "--out reports/{dataset}_wer.md"),
          deps=[f"{MET}/manifest.json", f"{MET}/lm.json", f"{MET}/train.json", f"{MET}/tune.json",
                f"{MET}/evaluate.json", f"{MET}/register.json", f"{PLOTS}/learning_curve.csv",
                f"{PLOTS}/tune_grid.csv", f"{PLOTS}/wer_by_duration.csv", f"{EVAL}/", f"{MAN}/", VOCAB, f"{LM}/",
                f"{MODEL}/"],
          outs=[f"reports/{{dataset}}_wer{suffix}" for suffix in REPORT_FILES],
          params=["evaluate.top_errors"], code=[f"{LIB}/evaluate/report.py", f"{LIB}/pipeline/lineage.py"]),
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
    return path.replace("{dataset}", "${dataset}").rstrip("/")


def dvc_yaml() -> dict[str, Any]:
    """The dvc.yaml mapping for every stage (dataset from params.yaml via templating)."""
    stages = {}
    for s in STAGES:
        entry: dict[str, Any] = {"cmd": launch_cmd(s.name),
                                 "deps": [_dvc(d) for d in s.all_deps]}
        if s.params:
            entry["params"] = list(s.params)
        entry["outs"] = [_dvc(o) for o in s.outs]
        if s.metrics:
            entry["metrics"] = [{_dvc(m): {"cache": False}} for m in s.metrics]
        # plot data are small uncached outputs; how to draw them is in the top-level plots
        entry["outs"] += [{_dvc(p): {"cache": False}} for p in s.plots]
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


def smk_shell(name: str) -> str:
    """The stage command for Snakemake's shell: the launcher with the dataset wildcard, shell-quoted
    (Snakemake formats the line, so the template's braces are doubled)."""
    template = shlex.quote(stage(name).cmd).replace("{", "{{").replace("}", "}}")
    return f"{LAUNCH} --dataset {{wildcards.dataset:q}} {template}"


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


def smk_params(name: str, config: dict[str, Any]) -> str:
    """The params slice a stage reads, as canonical JSON (Snakemake re-runs a rule when it changes)."""
    return json.dumps({k: lookup(config, k) for k in stage(name).params}, sort_keys=True)


def dvc_commit(config: dict[str, Any], root: Path = Path(".")) -> list[str]:
    """Record finished stages of params.yaml's dataset in dvc.lock (after a Snakemake run).

    Only stages whose outputs all exist are committed; returns their names.
    """
    ds = config["dataset"]
    ready = [s.name for s in STAGES
             if all((root / o.replace("{dataset}", ds).rstrip("/")).exists() for o in s.all_outs)]
    if ready:
        subprocess.run(["dvc", "commit", "--force", "--quiet", *ready], cwd=root, check=True)
    return ready


if __name__ == "__main__":
    sys.stdout.write(render_dvc_yaml())

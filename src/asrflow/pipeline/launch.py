"""Run a stage's command template without a shell, so no params value is ever shell code.

Both orchestrators run every stage as::

    python -m asrflow.pipeline.launch [--dataset NAME] '<template>'

where ``<template>`` is the stage's command from :mod:`asrflow.pipeline.definition` with placeholders
``{dataset}`` and ``{key.path}`` (a params.yaml value). The template is split into words
first and the placeholders are filled in word by word, so a value such as
``localhost:0; touch pwned`` stays one argument instead of becoming a second command.
(DVC's own ``${...}`` templating pastes values into a shell line unquoted: that is what
this replaces.) params.yaml is validated before anything runs; the command is then
``exec``-ed, so it keeps this process id and receives the orchestrator's signals directly.

``--dataset`` is Snakemake's wildcard; DVC omits it and params.yaml's ``dataset`` is used.

Inside a Slurm allocation (a cluster job: ``SLURM_JOB_ID`` set), a ``torchrun`` command
takes its nodes, processes per node and rendezvous endpoint from the allocation instead of
params.yaml: ``SLURM_JOB_NUM_NODES``, ``SLURM_GPUS_ON_NODE`` and the first host of
``SLURM_JOB_NODELIST`` (port from ``train.rdzv_endpoint``, or 29400), and on several nodes
it is started once per node with ``srun``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from typing import Any

from asrflow.pipeline.config import ParamsError, check_dataset, load_params
from asrflow.pipeline.definition import lookup

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_.]*)\}")


def expand_hostlist(spec: str) -> list[str]:
    """Slurm's compressed host list (``gpu[01-03,07],login2``) as host names."""
    hosts = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", spec):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            hosts += [f"{prefix}{i:0{len(lo)}d}" for i in range(int(lo), int(hi or lo) + 1)]
    return hosts


def slurm_overrides(params: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """params.yaml values a torchrun launch takes from the Slurm allocation it runs in."""
    if not env.get("SLURM_JOB_ID"):
        return {}
    nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    out = {"train.nnodes": str(nodes)}
    gpus = (env.get("SLURM_GPUS_ON_NODE") or "").split(":")[-1]
    if gpus.isdigit() and int(gpus) > 0:
        out["train.nproc_per_node"] = gpus
    if nodes > 1:
        head = expand_hostlist(env.get("SLURM_JOB_NODELIST", ""))[:1]
        if not head:
            raise ParamsError("a multi-node Slurm allocation without SLURM_JOB_NODELIST: cannot pick a rendezvous host")
        port = params["train"]["rdzv_endpoint"].rsplit(":", 1)[-1]
        out["train.rdzv_endpoint"] = f"{head[0]}:{port if port not in ('', '0') else 29400}"
    return out


def render(template: str, params: dict[str, Any], dataset: str,
           overrides: dict[str, str] | None = None) -> list[str]:
    """The argv of ``template`` with its placeholders filled in (no shell involved);
    ``overrides`` (``{"key.path": value}``) take precedence over params.yaml."""
    def value(m: re.Match) -> str:
        key = m.group(1)
        if key == "dataset":
            return dataset
        if overrides and key in overrides:
            return overrides[key]
        try:
            node = lookup(params, key)
        except (KeyError, TypeError):
            raise ParamsError(f"the stage command refers to '{key}', which params.yaml does not define") from None
        if isinstance(node, (dict, list)):
            raise ParamsError(f"the stage command needs a single value for '{key}', params.yaml has {node!r}")
        return str(node)
    return [PLACEHOLDER.sub(value, word) for word in shlex.split(template)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asrflow.pipeline.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read (default: %(default)s)")
    parser.add_argument("--dataset", help="dataset name (default: params.yaml's 'dataset')")
    parser.add_argument("template", help="the stage's command with {dataset} and {key.path} placeholders")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        dataset = args.dataset or params["dataset"]
        check_dataset(params, dataset)
        torchrun = args.template.split()[0] == "torchrun"
        overrides = slurm_overrides(params, dict(os.environ)) if torchrun else {}
        cmd = render(args.template, params, dataset, overrides)
    except ParamsError as e:
        print(f"[launch] error: {e}", file=sys.stderr)
        if os.environ.get("DVC_STAGE"):  # DVC removed the stage's outputs before calling this
            print(f"[launch] nothing ran. DVC removed this stage's outputs before calling it: fix params.yaml and "
                  f"run `dvc checkout {os.environ['DVC_STAGE']}` to get them back from the DVC cache. `asrflow repro` "
                  "(make repro) checks params.yaml before DVC touches anything", file=sys.stderr)
        return 2
    if overrides:
        print(f"[launch] from the Slurm allocation: {', '.join(f'{k}={v}' for k, v in overrides.items())}",
              file=sys.stderr)
        if int(overrides["train.nnodes"]) > 1:  # one torchrun per node; they meet at the rendezvous
            cmd = ["srun", f"--nodes={overrides['train.nnodes']}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                   *cmd]
    print(f"[launch] {shlex.join(cmd)}", file=sys.stderr, flush=True)
    if cmd[0] == "python":  # the interpreter this runs under: the project's venv whatever PATH says
        cmd[0] = sys.executable
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        print(f"[launch] error: cannot run {cmd[0]!r}: {e.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())

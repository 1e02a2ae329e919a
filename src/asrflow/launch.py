"""Run a stage's command template without a shell, so no params value is ever shell code.

Both orchestrators run every stage as::

    python -m asrflow.launch [--dataset NAME] '<template>'

where ``<template>`` is the stage's command from :mod:`asrflow.pipeline` with placeholders
``{dataset}`` and ``{key.path}`` (a params.yaml value). The template is split into words
first and the placeholders are filled in word by word, so a value such as
``localhost:0; touch pwned`` stays one argument instead of becoming a second command.
(DVC's own ``${...}`` templating pastes values into a shell line unquoted: that is what
this replaces.) params.yaml is validated before anything runs; the command is then
``exec``-ed, so it keeps this process id and receives the orchestrator's signals directly.

``--dataset`` is Snakemake's wildcard; DVC omits it and params.yaml's ``dataset`` is used.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from typing import Any

from asrflow.config import ParamsError, load_params

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_.]*)\}")


def render(template: str, params: dict[str, Any], dataset: str) -> list[str]:
    """The argv of ``template`` with its placeholders filled in (no shell involved)."""
    def value(m: re.Match) -> str:
        key = m.group(1)
        if key == "dataset":
            return dataset
        node: Any = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ParamsError(f"the stage command refers to '{key}', which params.yaml does not define")
            node = node[part]
        if isinstance(node, (dict, list)):
            raise ParamsError(f"the stage command needs a single value for '{key}', params.yaml has {node!r}")
        return str(node)
    return [PLACEHOLDER.sub(value, word) for word in shlex.split(template)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asrflow.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read (default: %(default)s)")
    parser.add_argument("--dataset", help="dataset name (default: params.yaml's 'dataset')")
    parser.add_argument("template", help="the stage's command with {dataset} and {key.path} placeholders")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        dataset = args.dataset or params["dataset"]
        if dataset not in params["datasets"]:
            raise ParamsError(f"unknown dataset {dataset!r}; params.yaml defines: {', '.join(params['datasets'])}")
        cmd = render(args.template, params, dataset)
    except ParamsError as e:
        print(f"[launch] error: {e}", file=sys.stderr)
        return 2
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

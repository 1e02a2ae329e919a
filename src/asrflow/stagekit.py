"""What every stage entry point shares: arguments, params validation, metrics, tracking.

A stage script defines ``add_args(parser)`` and ``run(ctx) -> metrics`` and calls
:func:`main`. Params are validated before ``run`` is called; the metrics returned are
written to ``--metrics`` (DVC metrics) and logged to MLflow with the stage's params slice.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from asrflow.config import ParamsError, load_params
from asrflow.pipeline import lookup, stage
from asrflow.tracking import StageRun, TrackingUnavailable, check_store


@dataclass
class Context:
    name: str
    args: argparse.Namespace
    params: dict[str, Any]
    dataset: str
    tracker: StageRun
    master: bool = True  # False on torchrun ranks other than 0: they neither track nor write metrics

    def log(self, msg: str) -> None:
        print(f"[{self.name}] {msg}", file=sys.stderr, flush=True)


def write_json(path: str | Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rows (same keys, in order) as CSV with a header, e.g. for DVC plots."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main(name: str, add_args: Callable[[argparse.ArgumentParser], None],
         run: Callable[[Context], dict[str, Any]], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=f"asrflow stage '{name}'")
    parser.add_argument("--params", required=True, help="params.yaml to read")
    parser.add_argument("--dataset", required=True, help="dataset name (a key of 'datasets' in params.yaml)")
    add_args(parser)
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        if args.dataset not in params["datasets"]:
            raise ParamsError(f"unknown dataset '{args.dataset}'; params.yaml defines: "
                              f"{', '.join(params['datasets'])}")
    except ParamsError as e:
        print(f"[{name}] error: {e}", file=sys.stderr)
        return 2
    master = int(os.environ.get("RANK", "0")) == 0
    try:  # before any work: a stage must not compute for an hour and then fail to record it
        if master:
            check_store(params["mlflow"])
    except TrackingUnavailable as e:
        print(f"[{name}] error: {e}", file=sys.stderr)
        return 2
    tracker = StageRun(name, args.dataset, params["mlflow"])
    tracker.log_params({k: lookup(params, k) for k in stage(name).params})
    tracker.log_params({"dataset": args.dataset})
    ctx = Context(name, args, params, args.dataset, tracker, master)
    t0 = time.perf_counter()
    try:
        metrics = run(ctx) or {}
    except Exception as e:  # one clear line, the traceback in the log, a FAILED run in MLflow
        traceback.print_exc()
        print(f"[{name}] error: {e}", file=sys.stderr)
        if not master:
            return 1
        try:
            tracker.flush("FAILED")
        except Exception as te:  # never let tracking hide the real error
            print(f"[{name}] could not record the failed run in MLflow: {te}", file=sys.stderr)
        return 1
    metrics.setdefault("stage_seconds", round(time.perf_counter() - t0, 2))
    if not master:
        return 0
    tracker.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, dict)})
    run_id = tracker.flush()
    if getattr(args, "metrics", None):  # after the run is recorded, so the metrics name it (lineage)
        write_json(args.metrics, {**metrics, **tracker.outputs, "mlflow_run_id": run_id})
    ctx.log(f"done in {metrics['stage_seconds']} s; MLflow run {run_id}")
    return 0

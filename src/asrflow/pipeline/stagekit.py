"""What every stage entry point shares: arguments, params validation, metrics, tracking.

A stage script defines ``add_args(parser)`` and ``run(ctx) -> metrics`` and calls
:func:`main`. Params are validated before ``run`` is called; the metrics returned are
logged to MLflow with the stage's params slice and written to ``--metrics`` (DVC metrics).
That file holds figures only (numbers and booleans, nested by split where a stage has
splits), what a DVC user compares across experiments; everything else about the run — its
MLflow run id, git commit, timings (``ctx.lineage``), and any value of the metrics that is
not a figure (names, paths, lists) — goes to the stage's lineage record (``--lineage-file``).

Outputs appear complete or not at all: a directory output is built in a hidden sibling
(``.<name>.partial-<pid>``) and renamed into place only after the run succeeded and was
recorded; files the run wrote are removed if it fails; the metrics JSON, written last and
atomically after the lineage record, marks a finished stage. A run killed outright leaves only the hidden sibling,
which the next run of the stage removes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from asrflow.common.files import write_json
from asrflow.common.logfile import LogTee
from asrflow.pipeline.config import ParamsError, ParamsView, check_dataset, load_params
from asrflow.pipeline.definition import lookup, stage
from asrflow.pipeline.provenance import KEY as PROVENANCE, hash_cache, stamp
from asrflow.pipeline.tracking import INVOCATION_ENV, StageRun, TrackingUnavailable, check_store, redact


@dataclass
class Context:
    name: str
    args: argparse.Namespace
    params: dict[str, Any]
    dataset: str
    tracker: StageRun
    master: bool = True  # False on torchrun ranks other than 0: they neither track nor write metrics

    outputs: "Outputs | None" = None
    # what the run was besides its figures (timings, names, settings): the lineage record, and
    # MLflow metrics where numeric
    lineage: dict[str, Any] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        print(f"[{self.name}] {msg}", file=sys.stderr, flush=True)

    def final(self, path: str | Path) -> str:
        """The path an output will have once published (``path`` may be its partial sibling)."""
        return self.outputs.final(path) if self.outputs else str(path)


class Outputs:
    """A stage's declared outputs (the options the pipeline definition names as products),
    built so that nothing partial looks complete."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.args = args
        self.options = stage(name).output_options()
        self.partial: dict[str, Path] = {}   # partial dir -> final dir
        self.started = time.time()

    def stage_directories(self) -> None:
        """Point each directory option at a fresh partial sibling (removing ones left by killed runs)."""
        for opt, is_dir in self.options:
            if not is_dir or getattr(self.args, opt, None) is None:
                continue
            final = Path(getattr(self.args, opt))
            final.parent.mkdir(parents=True, exist_ok=True)
            for stale in final.parent.glob(f".{final.name}.partial-*"):
                shutil.rmtree(stale, ignore_errors=True)
            partial = final.parent / f".{final.name}.partial-{os.getpid()}"
            self.partial[str(partial)] = final
            setattr(self.args, opt, str(partial))

    def final(self, path: str | Path) -> str:
        given = os.path.abspath(path)
        for partial, final in self.partial.items():
            p = os.path.abspath(partial)
            if given == p or given.startswith(p + os.sep):
                base = os.path.abspath(final) if os.path.isabs(path) else str(final)
                return base + given[len(p):]
        return str(path)

    def publish(self) -> None:
        """Rename each partial directory into place (replacing the previous version)."""
        for partial, final in self.partial.items():
            Path(partial).mkdir(parents=True, exist_ok=True)  # a stage with nothing to write
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif final.exists() or final.is_symlink():
                final.unlink()
            os.replace(partial, final)
        self.partial.clear()

    def discard(self) -> list[str]:
        """After a failure: remove the partial directories and the files this run wrote.
        Outputs of earlier, successful runs are left as they were. Returns what was removed."""
        removed = []
        for partial in self.partial:
            if Path(partial).exists():
                shutil.rmtree(partial, ignore_errors=True)
                removed.append(partial)
        for opt, is_dir in self.options:
            f = Path(getattr(self.args, opt, None) or "")
            if not is_dir and f.is_file() and f.stat().st_mtime >= self.started - 1:
                f.unlink()
                removed.append(str(f))
        return removed


def main(name: str, add_args: Callable[[argparse.ArgumentParser], None],
         run: Callable[[Context], dict[str, Any]], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=f"asrflow stage '{name}'")
    parser.add_argument("--params", required=True, help="params.yaml to read")
    parser.add_argument("--dataset", required=True, help="dataset name (a key of 'datasets' in params.yaml)")
    # (not --log: torchrun, which starts the train stage, would take it for an abbreviation of its --log-dir)
    parser.add_argument("--log-file", help="the stage's log file: what it prints, with timestamps, and tracebacks")
    parser.add_argument("--lineage-file", help="where to record the run's lineage (MLflow run id, git commit, "
                                               "timings): what is not a figure for --metrics")
    add_args(parser)
    args = parser.parse_args(argv)
    master = int(os.environ.get("RANK", "0")) == 0
    log = LogTee(sys.stderr, args.log_file) if args.log_file and master else None
    if log:
        sys.stderr = log
        log.file_only(f"{shlex.join(['stages/' + name + '.py', *(argv if argv is not None else sys.argv[1:])])}")
    try:
        return _run(name, run, args, master, log)
    finally:
        if log:
            log.close()


def _run(name: str, run: Callable[[Context], dict[str, Any]], args: argparse.Namespace, master: bool,
         log: LogTee | None) -> int:
    try:
        params = load_params(args.params)
        check_dataset(params, args.dataset)
    except ParamsError as e:
        print(f"[{name}] error: {e}", file=sys.stderr)
        return 2
    try:  # before any work: a stage must not compute for an hour and then fail to record it
        if master:
            check_store(params["mlflow"])
    except TrackingUnavailable as e:  # the message names the store with its password redacted
        print(f"[{name}] error: {e}", file=sys.stderr)
        return 2
    tracker = StageRun(name, args.dataset, params["mlflow"], params_file=args.params)
    keys = stage(name).keys(args.dataset, params)
    tracker.log_params({k: lookup(params, k) for k in keys})
    tracker.log_params({"dataset": args.dataset})
    # the stage reads params.yaml through a view that refuses keys it does not declare and
    # records those it reads (into the lineage record); the machinery here reads `params`
    view = ParamsView(params, tuple(keys), name)
    # only rank 0 writes outputs (torchrun's other ranks keep the final paths and write nothing)
    outputs = Outputs(name, args) if master else None
    ctx = Context(name, args, view, args.dataset, tracker, master, outputs)
    t0 = time.perf_counter()
    try:
        if outputs:
            outputs.stage_directories()
        metrics = run(ctx) or {}
        ctx.lineage.setdefault("stage_seconds", round(time.perf_counter() - t0, 2))
        if not master:
            return 0
        tracker.log_metrics({k: v for k, v in {**metrics, **ctx.lineage}.items() if not isinstance(v, dict)})
        run_id = tracker.flush()
        outputs.publish()
    except (Exception, KeyboardInterrupt) as e:  # one clear line, the traceback in the log, a FAILED run in MLflow
        if isinstance(e, KeyboardInterrupt):
            print(f"[{name}] interrupted", file=sys.stderr)
        else:  # redacted: an error may quote a URL with a password in it
            trace = redact(traceback.format_exc())
            if log:  # the traceback is for whoever debugs asrflow: in the log, not on the terminal
                log.file_only(trace)
            else:
                print(trace, end="", file=sys.stderr)
            print(f"[{name}] error: {redact(str(e))}" + (f" (traceback in {log.path})" if log else ""),
                  file=sys.stderr)
        if not master:
            return 1
        removed = outputs.discard()
        if removed:
            print(f"[{name}] removed this run's incomplete outputs: {', '.join(removed)}", file=sys.stderr)
        if tracker.run_id is None:
            try:
                tracker.flush("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            except Exception as te:  # never let tracking hide the real error
                print(f"[{name}] could not record the failed run in MLflow: {redact(str(te))}", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    # the figures runs are compared by to --metrics, the rest to the lineage record; a stage
    # run without a record (by hand) keeps every figure in --metrics rather than lose some
    figures, other = split_figures(metrics, stage(name).compares if args.lineage_file else lambda key: True)
    if args.lineage_file:  # after the run is recorded, so the record names it
        record = {"mlflow_run_id": run_id, "git_commit": tracker.tags.get("mlflow.source.git.commit"),
                  "git_dirty": tracker.tags.get("asrflow.git_dirty") == "true",
                  "invocation": tracker.tags.get(INVOCATION_ENV.lower()), **tracker.outputs}
        record["params_read"] = view.reads
        record[PROVENANCE] = _stamp(name, args.dataset, params, ctx)
        write_json(args.lineage_file, _merge(_merge(record, ctx.lineage), other))
    if getattr(args, "metrics", None):  # last: a finished stage
        write_json(args.metrics, figures)
    ctx.log(f"done in {ctx.lineage['stage_seconds']} s; MLflow run {run_id}")
    return 0


def _stamp(name: str, dataset: str, params: dict[str, Any], ctx: Context) -> dict[str, Any] | None:
    """The run's provenance stamp (asrflow.pipeline.provenance); None, with a warning, if the
    products cannot be hashed: the Snakefile then names the stage as unstamped (not forced)."""
    cache = hash_cache(dataset)  # shared with the report and the Snakefile's check
    try:
        stamped = stamp(name, dataset, params, cache=cache)
        cache.save()
        return stamped
    except OSError as e:
        ctx.log(f"warning: no provenance stamp ({e}); Snakemake will name this stage as unstamped, "
                "and only its own record will decide whether it is current")
        return None


def is_figure(value: Any) -> bool:
    """A value DVC compares as a metric: a number or a boolean."""
    return isinstance(value, (bool, int, float))


def split_figures(metrics: dict[str, Any], compared: Callable[[str], bool] = lambda key: True,
                  prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """``metrics`` as (the figures runs are compared by, everything else), both keeping the
    nesting: numbers and booleans whose dotted key ``compared`` accepts go to the DVC metrics
    file; other figures, names, paths, lists and missing values (None) to the lineage record.
    A nested mapping left empty is dropped."""
    figures: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            f, o = split_figures(v, compared, f"{prefix}{k}.")
            if f:
                figures[k] = f
            if o:
                other[k] = o
        elif is_figure(v) and compared(f"{prefix}{k}"):
            figures[k] = v
        else:
            other[k] = v
    return figures, other


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` updated with ``b``, nested mappings merged."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out

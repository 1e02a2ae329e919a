"""The ``asrflow`` command.

``asrflow transcribe FILE... --model PATH_OR_URI`` prints ``FILE<TAB>TRANSCRIPT`` per
input file, in input order, on stdout; a file that cannot be transcribed is reported on
stderr (``asrflow transcribe: FILE: reason``) and the others are still transcribed.
Exit status: 0 all transcribed, 1 some file failed, 2 usage error (no model, a model
path or URI that does not load, no tracking store for a URI).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

MODEL_ENV = "ASRFLOW_MODEL"
#: The pipeline's tracking store (params.yaml ``mlflow.tracking_uri``), relative to the project directory.
PIPELINE_STORE = Path("mlruns") / "mlflow.db"

_MODEL_HELP = ("a model directory written by asrflow.serve.package.package_model, or an MLflow model URI: "
               "models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH (default: $" + MODEL_ENV + ")")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asrflow", description="Speech recognition with an asrflow-trained model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("transcribe", help="transcribe audio files",
                       description="Transcribe audio files (any format, sample rate or channel count sox reads). "
                                   "Prints FILE<TAB>TRANSCRIPT per file, in input order.")
    t.set_defaults(run=_transcribe, usage_error=t.error)
    t.add_argument("files", nargs="+", metavar="FILE", help="audio files")
    t.add_argument("--model", default=os.environ.get(MODEL_ENV) or None, metavar="PATH_OR_URI", help=_MODEL_HELP)
    t.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking store that resolves a models:/ or runs:/ URI (default: $MLFLOW_TRACKING_URI, "
                        f"else sqlite:///{PIPELINE_STORE} when that file exists in the current directory)")
    return p


def resolve_tracking_uri(cli_value: str | None) -> str | None:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the pipeline's SQLite store
    when it exists in the current directory, else None."""
    if cli_value:
        return cli_value
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if PIPELINE_STORE.is_file():
        return f"sqlite:///{PIPELINE_STORE}"
    return None


def _transcribe(args: argparse.Namespace) -> int:
    prog = "asrflow transcribe"
    usage_error = args.usage_error
    if not args.model:
        usage_error(f"no model given: pass --model PATH_OR_URI (a directory written by asrflow.serve.package.package_model, "
                    f"or models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH) or set {MODEL_ENV}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from asrflow.serve.loading import ModelLoadError, load_transcriber

    # after the import (MLflow sets its loggers up then): warnings (e.g. a dependency version
    # differing from the packaged one) still reach stderr, its INFO chatter does not; stdout
    # carries transcripts only
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    if args.model.startswith(("models:/", "runs:/")):
        uri = resolve_tracking_uri(args.tracking_uri)
        if uri is None:
            usage_error(f"--model {args.model} is an MLflow URI but no tracking store is known: pass "
                        f"--tracking-uri URI, set MLFLOW_TRACKING_URI, or run from the project directory "
                        f"(where {PIPELINE_STORE} is)")
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
            usage_error(f"tracking store {uri}: database file {uri[len('sqlite:///'):]} does not exist")
        import mlflow

        mlflow.set_tracking_uri(uri)
    elif args.tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(args.tracking_uri)
    try:
        model = load_transcriber(args.model)
    except ModelLoadError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    failed = 0
    for r in model.iter_transcribe(args.files):  # each line as soon as its file is done
        if r.ok:
            print(f"{r.path}\t{r.text}", flush=True)
        else:
            failed += 1
            print(f"{prog}: {r.error}", file=sys.stderr, flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``asrflow`` console script; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        return args.run(args)
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else 2


if __name__ == "__main__":
    raise SystemExit(main())

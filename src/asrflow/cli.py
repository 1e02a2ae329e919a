r"""The ``asrflow`` command.

``asrflow transcribe FILE... --model PATH_OR_URI`` prints one record per input file, in
input order, on stdout; a file that cannot be transcribed is reported on stderr
(``asrflow transcribe: FILE: reason``) and the others are still transcribed.
Exit status: 0 all transcribed, 1 some file failed, 2 usage error (no model, a model
path or URI that does not load, no tracking store for a URI).

``--format tsv`` (the default) prints ``FILE<TAB>TRANSCRIPT`` lines for the transcribed
files. A file name may hold any character but NUL, so both fields are escaped and every
record is exactly one line with exactly one tab, whatever the name: backslash, tab, newline
and carriage return as ``\\``, ``\t``, ``\n``, ``\r``; any other control or line-separating
character (C0, DEL, C1, U+2028, U+2029) as ``\uXXXX``; and a byte of the name that is not
UTF-8 as ``\xXX`` (so the name's exact bytes can be recovered). Nothing else is changed: a
name without those characters prints as it is. The stderr lines are escaped the same way, so
a name cannot forge a line there either.

``--format jsonl`` prints one JSON object per input file, failed ones included:
``{"path": ..., "text": ..., "error": ...}`` (``text`` null when ``error`` is set, ``error``
null on success), ASCII-only (``\uXXXX`` escapes; a byte of the name that is not UTF-8 is
Python's ``surrogateescape`` code point, U+DC80-U+DCFF, which ``os.fsencode`` turns back into
the byte). A failed file also gets its stderr line, as in tsv.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

MODEL_ENV = "ASRFLOW_MODEL"
#: The pipeline's tracking store (params.yaml ``mlflow.tracking_uri``), relative to the project directory.
PIPELINE_STORE = Path("mlruns") / "mlflow.db"

FORMATS = ("tsv", "jsonl")
_FORMAT_HELP = ("tsv (default): FILE<TAB>TRANSCRIPT per transcribed file, both fields escaped so that a record is one "
                "line with one tab: backslash, tab, newline, carriage return as \\\\, \\t, \\n, \\r, other control "
                "and line-separator characters as \\uXXXX, a name's bytes that are not UTF-8 as \\xXX; "
                "jsonl: one JSON object per file, failed ones included: {\"path\", \"text\", \"error\"} "
                "(failures are also reported on stderr, escaped as in tsv)")
# what escape() rewrites: the escape character itself, C0/DEL/C1 controls (tab, LF, CR among
# them), the Unicode line and paragraph separators, and the surrogates Python decodes a name's
# non-UTF-8 bytes to (surrogateescape)
_SPECIAL = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}

_MODEL_HELP = ("a model directory written by asrflow.serve.package.package_model (or by asrflow export), or an "
               "MLflow model URI: models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH "
               "(default: $" + MODEL_ENV + ")")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asrflow", description="Speech recognition with an asrflow-trained model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("transcribe", help="transcribe audio files",
                       description="Transcribe audio files (any format, sample rate or channel count sox reads). "
                                   "Prints FILE<TAB>TRANSCRIPT per file, in input order, with backslash, tab, "
                                   "newline and carriage return in a field escaped as \\\\, \\t, \\n, \\r "
                                   "(see --format), or one JSON object per file with --format jsonl.")
    t.set_defaults(run=_transcribe, usage_error=t.error)
    t.add_argument("files", nargs="+", metavar="FILE", help="audio files")
    _model_args(t)
    t.add_argument("--format", choices=FORMATS, default="tsv", help=_FORMAT_HELP)
    e = sub.add_parser("export", help="export a model for ONNX Runtime",
                       description="Write the acoustic model as ONNX (normalisation inside the graph, log-mel "
                                   "features in, CTC log-probs out) with its front-end description, tokens, tuned "
                                   "decoder settings and LM files into OUT; checked against PyTorch before it is "
                                   "written. `asrflow transcribe --model OUT` then decodes with ONNX Runtime.")
    e.set_defaults(run=_export, usage_error=e.error)
    _model_args(e)
    e.add_argument("--out", required=True, metavar="DIR", help="the export directory (replaced if it exists)")
    s = sub.add_parser("serve", help="serve a model over HTTP and WebSocket, with a live demo page",
                       description="Serve a model: POST /transcribe (an audio file as the body), WS /stream (16-bit "
                                   "PCM at the model's rate, partial results as it arrives, the final one after "
                                   "{\"eof\": true}), GET /health, GET /metrics, and a demo page at / (microphone "
                                   "or file). Binds 127.0.0.1 unless --host says otherwise.")
    s.set_defaults(run=_serve, usage_error=s.error)
    _model_args(s)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--token", default=os.environ.get("ASRFLOW_TOKEN") or None,
                   help="require 'Authorization: Bearer TOKEN' (or ?token= on the WebSocket); default $ASRFLOW_TOKEN")
    s.add_argument("--max-upload-mb", type=float, default=20.0, help="largest audio file POST /transcribe takes")
    s.add_argument("--max-stream-s", type=float, default=120.0, help="most audio one stream may send (seconds)")
    s.add_argument("--max-streams", type=int, default=8, help="streams open at once; the next is refused (1013)")
    sub.add_parser("repro", help="dvc repro, with params.yaml checked before DVC removes any output",
                   description="Validate params.yaml, then run `dvc repro` with the arguments given; if it fails, "
                               "check out again from the DVC cache the outputs it removed. Run it in the project "
                               "directory.", usage="asrflow repro [DVC REPRO ARGS...]")
    return p


def _model_args(p: argparse.ArgumentParser) -> None:
    """``--model`` and the ``--tracking-uri`` that resolves it: what every model command takes."""
    p.add_argument("--model", default=os.environ.get(MODEL_ENV) or None, metavar="PATH_OR_URI", help=_MODEL_HELP)
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking store that resolves a models:/ or runs:/ URI (default: $MLFLOW_TRACKING_URI, "
                        f"else sqlite:///{PIPELINE_STORE} when that file exists in the current directory)")


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _NAMED:
        return _NAMED[ch]
    if "\udc80" <= ch <= "\udcff":  # a byte of the name that is not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return f"\\u{ord(ch):04x}"


def escape(text: str) -> str:
    r"""``text`` as one unambiguous TSV field: backslash, tab, newline and carriage return as
    ``\\``, ``\t``, ``\n``, ``\r``, other control and line-separating characters as
    ``\uXXXX``, a non-UTF-8 byte of a file name as ``\xXX``; anything else unchanged.

    A file name is chosen by whoever made the file: printed as it is, a tab or newline in it
    would forge fields or whole records in the output (and a non-UTF-8 byte would stop the
    command with an encoding error)."""
    return _SPECIAL.sub(_escape_char, text)


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
    _use_model_args(args)
    from asrflow.serve.loading import ModelLoadError, load_transcriber

    try:
        model = load_transcriber(args.model)
    except ModelLoadError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    failed = 0
    for r in model.iter_transcribe(args.files):  # each record as soon as its file is done
        if args.format == "jsonl":
            print(json.dumps({"path": r.path, "text": r.text, "error": r.error}, ensure_ascii=True), flush=True)
        elif r.ok:
            print(f"{escape(r.path)}\t{escape(r.text)}", flush=True)
        if not r.ok:
            failed += 1
            print(f"{prog}: {escape(r.error)}", file=sys.stderr, flush=True)
    return 1 if failed else 0


def _export(args: argparse.Namespace) -> int:
    _use_model_args(args)
    from asrflow.serve.export import ExportError, export_onnx
    from asrflow.serve.loading import ModelLoadError

    try:
        meta = export_onnx(args.model, args.out)
    except (ModelLoadError, ExportError, OSError) as e:
        print(f"asrflow export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: acoustic model {meta['onnx_mb']} MB (opset {meta['opset']}), ONNX Runtime vs PyTorch "
          f"log-probs differ by at most {meta['check_max_abs_diff']:.2g}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    _use_model_args(args)
    from asrflow.serve.loading import ModelLoadError
    from asrflow.serve.server import ServerSettings, serve

    settings = ServerSettings(token=args.token, max_upload_mb=args.max_upload_mb, max_stream_s=args.max_stream_s,
                              max_streams=args.max_streams)
    try:
        serve(args.model, args.host, args.port, settings)
    except ModelLoadError as e:
        print(f"asrflow serve: {e}", file=sys.stderr)
        return 2
    return 0


def _use_model_args(args: argparse.Namespace) -> None:
    """What every model command does first with ``--model`` and ``--tracking-uri``: a usage
    error (which exits) when no model is given; MLflow quiet; MLflow pointed at the store that
    resolves a ``models:/`` or ``runs:/`` URI (a usage error when there is none)."""
    usage_error = args.usage_error
    if not args.model:
        usage_error(f"no model given: pass --model PATH_OR_URI (a directory written by asrflow.serve.package.package_model, "
                    f"or models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH) or set {MODEL_ENV}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # sets its loggers up: quieted after it

    # warnings (e.g. a dependency version differing from the packaged one) still reach stderr,
    # MLflow's INFO chatter does not; stdout carries the command's output only
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
        mlflow.set_tracking_uri(uri)
    elif args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``asrflow`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["repro"] and argv[1:2] not in (["-h"], ["--help"]):  # every other word is dvc repro's
        from asrflow.pipeline.repro import main as repro

        return repro(argv[1:])
    try:
        args = _parser().parse_args(argv)
        return args.run(args)
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else 2


if __name__ == "__main__":
    raise SystemExit(main())

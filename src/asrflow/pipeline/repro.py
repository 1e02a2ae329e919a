"""``asrflow repro``: ``dvc repro`` that validates params.yaml before DVC touches anything.

DVC removes a stage's outputs before it runs the stage's command, and the command is
where params.yaml used to be validated: a typo deleted good outputs. This entry validates
the whole file first (a bad key is reported even when no stage reading it is stale) and
runs ``dvc repro`` only when it is valid. When ``dvc repro`` then fails (a stage error,
Ctrl-C), the outputs DVC removed from stages that did not finish are checked out again
from the DVC cache as ``dvc.lock`` records them (``dvc checkout <stage>``): a failed run
leaves the previous results in place, except the small uncached metrics and plot-data
files (DVC's ``cache: false`` convention), which are named and made again by the next run. Plain ``dvc repro`` still works; its launcher
refuses bad params too (nothing runs), and says how to get removed outputs back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from asrflow.pipeline.config import ParamsError, load_params

PROG = "asrflow repro"


def _dvc() -> str:
    """The dvc beside this interpreter (the project's venv), else the one on PATH."""
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.is_file() else (shutil.which("dvc") or "dvc")


def removed_outputs(cwd: str | Path = ".") -> dict[str, list[str]]:
    """Stages whose outputs recorded in ``dvc.lock`` are missing from the workspace
    (``dvc status``: ``deleted``), with those paths."""
    proc = subprocess.run([_dvc(), "status", "--json"], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {}
    out: dict[str, list[str]] = {}
    for stage, changes in json.loads(proc.stdout or "{}").items():
        for change in changes if isinstance(changes, list) else []:
            gone = [p for p, what in (change.get("changed outs") or {}).items() if what == "deleted"] \
                if isinstance(change, dict) else []
            if gone:
                out.setdefault(stage, []).extend(gone)
    return out


def restore(cwd: str | Path = ".") -> tuple[list[str], list[str]]:
    """Check out from the DVC cache the outputs of every stage missing them (``dvc checkout
    <stage>...``). Returns the paths restored and those still missing: an output DVC does
    not cache (``cache: false``: metrics and plot data) is only made again by its stage."""
    gone = removed_outputs(cwd)
    if not gone:
        return [], []
    subprocess.run([_dvc(), "checkout", *gone], cwd=cwd, capture_output=True, text=True)
    still = {p for ps in removed_outputs(cwd).values() for p in ps}
    before = sorted({p for ps in gone.values() for p in ps})
    return [p for p in before if p not in still], [p for p in before if p in still]


def main(argv: list[str] | None = None, params: str = "params.yaml") -> int:
    """Validate ``params``, then ``dvc repro *argv``; restore removed outputs if it fails."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: {PROG} [DVC REPRO ARGS...]\n\n{__doc__}")
        return 0
    try:
        load_params(params)
    except ParamsError as e:
        print(f"{PROG}: error: {e}\n{PROG}: nothing ran and no file changed", file=sys.stderr)
        return 2
    try:
        rc = subprocess.call([_dvc(), "repro", *argv])
    except KeyboardInterrupt:
        rc = 130
    if rc == 0:
        return 0
    restored, missing = restore()
    if restored:
        print(f"{PROG}: dvc repro failed (exit {rc}); the previous outputs it had removed are back from the DVC "
              f"cache: {', '.join(restored)}", file=sys.stderr)
    if missing:
        print(f"{PROG}: not in the DVC cache (cache: false), made again when their stage next runs: "
              f"{', '.join(missing)}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())

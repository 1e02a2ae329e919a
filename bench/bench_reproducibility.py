"""Full-size reproducibility: the default `make run` chain twice from clean, products compared.

    python bench/bench_reproducibility.py                 # two fresh copies, run one after the other
    python bench/bench_reproducibility.py --reference DIR # one fresh copy against a finished run in DIR

Each run is `snakemake -j <cores> reports/synth_wer.md` in a throwaway copy of the repo
(the installed .venv/.tools are linked). Prints one JSON object as its last line and
writes it to reports/bench/reproducibility.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]  # tests/repro.py: shared with the tests
from repro import copy_project, product_digests  # noqa: E402
from corpus import emit  # noqa: E402  (bench/ is on sys.path when run as a script)


def run_once(workdir: Path) -> float:
    repo = copy_project(REPO, workdir)
    # the copy's own code, not the (editable-installed) working tree's, which may change meanwhile
    env = {**os.environ, "PATH": f"{REPO}/.venv/bin:{REPO}/.tools/kenlm/bin:{os.environ['PATH']}",
           "PYTHONPATH": str(repo / "src")}
    env.pop("ASRFLOW_INVOCATION", None)
    t0 = time.perf_counter()
    subprocess.run(["snakemake", "-j", str(os.cpu_count()), "reports/synth_wer.md"], cwd=repo, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, help="a repo whose finished run is the first of the pair")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="asrflow-repro-") as tmp:
        walls = []
        if args.reference:
            first = args.reference.resolve()
        else:
            first = Path(tmp) / "a"
            first.mkdir()
            walls.append(run_once(first))
        second = Path(tmp) / "b"
        second.mkdir()
        walls.append(run_once(second))
        a, b = product_digests(first), product_digests(second)
    differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    result = {"files_compared": len(a.keys() | b.keys()), "files_identical": len(a.keys() | b.keys()) - len(differing),
              "differing_files": differing, "byte_identical": not differing and bool(a),
              "run_wall_s": [round(w, 1) for w in walls]}
    emit("reproducibility", result)


if __name__ == "__main__":
    main()

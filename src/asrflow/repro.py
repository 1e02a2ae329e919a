"""Reproducibility checks: copy the project, hash what a run produced.

Shared by the tests (tiny configuration) and ``bench/bench_reproducibility.py`` (full size).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

# What a run from clean must reproduce byte for byte (per dataset).
PRODUCTS = ["data/{d}/archives", "data/{d}/manifests", "data/{d}/stats.json", "data/{d}/vocab.txt",
            "data/{d}/lm/lm.bin", "data/{d}/lm/lm.arpa", "models/{d}/model.pt", "results/{d}/tune/grid.csv",
            "results/{d}/tune/best.json", "results/{d}/evaluate", "metrics/{d}/evaluate.json",
            "metrics/{d}/tune.json", "reports/{d}_wer.md"]
TIMING_KEYS = ("stage_seconds", "train_seconds", "train_audio_s_per_s", "grid_seconds", "acoustic_seconds")


def comparable_bytes(path: Path) -> bytes:
    """A product's bytes with wall-clock figures left out (they are timings, like timestamps):
    timing keys of metrics JSON and the report's wall-time line. Everything else is kept."""
    if path.suffix == ".json" and path.parent.parent.name == "metrics":
        m = json.loads(path.read_text())
        for k in TIMING_KEYS:
            m.pop(k, None)
        return json.dumps(m, sort_keys=True).encode()
    if path.suffix == ".md":
        return "\n".join(l for l in path.read_text().splitlines() if "wall time" not in l).encode()
    return path.read_bytes()


def product_digests(repo: Path, dataset: str = "synth") -> dict[str, str]:
    """SHA-256 of every product file of ``dataset`` under ``repo`` (Snakemake's markers skipped)."""
    out = {}
    for rel in PRODUCTS:
        p = repo / rel.format(d=dataset)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.exists() else []
        for f in files:
            if f.name != ".snakemake_timestamp":
                out[str(f.relative_to(repo))] = hashlib.sha256(comparable_bytes(f)).hexdigest()
    return out


def copy_project(src: Path, dest: Path, link: tuple[str, ...] = (".venv", ".tools")) -> Path:
    """A fresh git repo at ``dest`` with the project's files (tracked + untracked, not ignored),
    as a clone would hold them; ``link`` entries (the installed environment) are symlinked."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (src / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / f, dest / f)
    for name in link:
        if (src / name).exists():
            (dest / name).symlink_to((src / name).resolve())
    git = ["git", "-c", "user.name=asrflow", "-c", "user.email=asrflow@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "copy"], cwd=dest, check=True)
    return dest

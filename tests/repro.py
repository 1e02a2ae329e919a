"""Reproducibility checks: copy the project, hash what a run produced.

Shared by the tests (tiny configuration) and ``bench/bench_reproducibility.py`` (full size).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from asrflow.pipeline.lineage import RUN_WRITTEN

# What a run from clean must reproduce byte for byte (per dataset).
PRODUCTS = ["data/{d}/archives", "data/{d}/manifests", "data/{d}/stats.json", "data/{d}/vocab.txt",
            "data/{d}/lm/lm.bin", "data/{d}/lm/lm.arpa", "models/{d}/model.pt", "results/{d}/tune/grid.csv",
            "results/{d}/tune/best.json", "results/{d}/evaluate", "metrics/{d}/evaluate.json",
            "metrics/{d}/tune.json", "plots/{d}/wer_by_duration.csv", "reports/{d}_wer.md"]
# Figures that differ between two runs of identical products: speeds (audio seconds per second,
# real-time factors). Wall-clock timings and the ids MLflow gives runs are in the stages'
# lineage records, not in the metrics. Everything else is compared.
VOLATILE_KEYS = ("train_audio_s_per_s",)
HEX_ID = re.compile(r"`[0-9a-f]{8,}(?:\.dir)?(?:-dirty)?`")


def _drop_volatile(m: Any) -> Any:
    if isinstance(m, dict):
        return {k: _drop_volatile(v) for k, v in m.items() if k not in VOLATILE_KEYS and not k.startswith("rtf_")}
    return m


def comparable_report(text: str) -> str:
    """The report without what differs between identical runs: its timing, lineage, history and
    model-registry sections, the training wall-time line, and the commit/hash/run ids in tables."""
    from asrflow.evaluate.report import VOLATILE_SECTIONS

    keep, skipping = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            skipping = line.startswith(VOLATILE_SECTIONS)
        if not skipping and "wall time" not in line:
            keep.append(HEX_ID.sub("`id`", line))
    return "\n".join(keep)


def comparable_bytes(path: Path) -> bytes:
    """A product's bytes with run-specific figures left out (timings and ids, like timestamps):
    volatile keys of metrics JSON and the report's volatile parts. Everything else is kept."""
    if path.suffix == ".json" and path.parent.parent.name == "metrics":
        return json.dumps(_drop_volatile(json.loads(path.read_text())), sort_keys=True).encode()
    if path.suffix == ".md":
        return comparable_report(path.read_text()).encode()
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
    """A fresh git repo at ``dest`` with the project's files (tracked + untracked, not ignored,
    minus a run's own products such as dvc.lock and metrics/), as a clone would hold them;
    ``link`` entries (the installed environment) are symlinked. Refuses a stale environment:
    the copy's own ``make`` would re-install the shared .venv from the copy."""
    installed = src / ".venv" / ".installed"
    stale = [f for f in ("pyproject.toml", "requirements.txt")
             if ".venv" in link and installed.exists() and (src / f).stat().st_mtime > installed.stat().st_mtime]
    if stale:
        raise RuntimeError(f"{', '.join(stale)} changed since .venv was installed: run `make install` first (a repo "
                           "copy's make would re-install the shared .venv from the copy)")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (src / f).is_file() and not f.startswith(RUN_WRITTEN):  # a clone has no run's products
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

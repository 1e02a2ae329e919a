"""Several corpora as one dataset (``source: combine``): each part is a dataset entry of its own
(any other source), fetched into ``<archives>/<part>/`` and listed by its own source; the
combined ``splits`` name, per split, the parts that provide it (each part's split of that name).

Names stay apart: a part's utterance ids and speakers become ``<part>-<id>`` and
``<part>-<speaker>``, its subsets ``<part>/<subset>``, its input keys ``<part>:<key>``. A part's
``weights`` entry (default 1) is how many times per epoch training sees each of the part's
training utterances (:func:`asrflow.train.batches.weighted_rows`); dev and test splits are
never weighted. ``parts.json`` beside the archives records the parts and their weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from asrflow.common.files import write_json
from asrflow.data.sources import Listing, source_of

PARTS_JSON = "parts.json"


def part_subsets(entry: dict[str, Any], part: str) -> list[str]:
    """The subsets of ``part`` that the combined splits draw on."""
    own = entry["parts"][part]["splits"]
    return [s for split, parts in entry["splits"].items() if part in parts for s in own[split]]


def fetch(entry: dict[str, Any], subsets: list[str], out_dir: Path, store: Path, *, seed: int, sample_rate: int,
          log: Callable[[str], None]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    weights = entry.get("weights", {})
    for name, part in entry["parts"].items():
        wanted = part_subsets(entry, name)
        if not wanted:
            log(f"part {name}: no split of the combined dataset draws on it; skipped")
            continue
        log(f"part {name} ({part['source']}, weight {weights.get(name, 1)}): subsets {', '.join(wanted)}")
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        # a part keeps its downloads where a dataset of its name does: one verified copy
        got = source_of(part).fetch(part, wanted, out_dir / name, store.parent / name, seed=seed,
                                    sample_rate=sample_rate, log=lambda m, n=name: log(f"[{n}] {m}"))
        metrics[name] = got
    write_json(out_dir / PARTS_JSON, {"parts": {n: {"weight": weights.get(n, 1), **p}
                                                for n, p in entry["parts"].items() if n in metrics},
                                      "splits": entry["splits"]})
    return metrics


def open_source(archive_dir: Path, raw_dir: Path, max_gb: float, log: Callable[[str], None]) -> tuple[dict, int]:
    path = archive_dir / PARTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the download stage for this dataset first")
    info = json.loads(path.read_text(encoding="utf-8"))
    opened, extracted = {}, 0
    for name, part in info["parts"].items():
        source = source_of(part)
        root, n = source.open(archive_dir / name, raw_dir / name, max_gb, lambda m, n=name: log(f"[{n}] {m}"))
        opened[name] = (part, source.lister(root), raw_dir / name)
        extracted += n
    return opened, extracted


def list_split(opened: dict[str, Any], split: str, subsets: list[str]) -> Listing:
    """``subsets``: the parts this split draws on."""
    out = Listing()
    for name in subsets:
        part, lister, raw = opened[name]
        weight = float(part["weight"]) if split == "train" else 1.0
        got = lister(raw, split, part["splits"][split])
        out.utterances += [dataclasses.replace(
            u, utt_id=f"{name}-{u.utt_id}", subset=f"{name}/{u.subset}", key=f"{name}:{u.key}",
            speaker=f"{name}-{u.speaker}" if u.speaker else "", weight=weight) for u in got.utterances]
        out.rejects += [{**r, "utt_id": f"{name}-{r['utt_id']}" if r["utt_id"] else "",
                         "subset": f"{name}/{r['subset']}", "key": f"{name}:{r['key']}"} for r in got.rejects]
        out.inputs += [f"{name}:{k}" for k in got.inputs]
    return out


def summary(opened: dict[str, Any], manifests: Path) -> dict[str, Any]:
    """Per part: source, weight and utterances per split in the written manifests (for lineage)."""
    import pandas as pd
    out: dict[str, Any] = {n: {"source": p["source"], "weight": p["weight"]} for n, (p, _, _) in opened.items()}
    for path in sorted(Path(manifests).glob("*.parquet")):
        if path.stem == "rejects":
            continue
        parts = pd.read_parquet(path, columns=["subset"])["subset"].str.split("/", n=1).str[0].value_counts()
        for name, n in parts.items():
            out[name][f"{path.stem}_utterances"] = int(n)
    return out

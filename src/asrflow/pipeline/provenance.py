"""What made the outputs on disk: a stamp each stage writes, checked before Snakemake plans.

Snakemake and DVC each keep their own record of what they ran (``.snakemake/metadata``,
``dvc.lock``) and neither reads the other's. An output one of them made is, to the other,
just a file with a newer date: after ``dvc exp run -S tune.alpha_count=9`` and params.yaml
put back, Snakemake's record of ``tune`` (made under 45) still matches params.yaml, so it
would plan only what follows ``tune`` and reuse DVC's 9-point grid.

So every stage, under either orchestrator, stamps its run into its lineage record
(``lineage/<dataset>/<stage>.json``, key ``provenance``): the values of the params keys it
reads, the MD5 of every code file it runs, and the DVC hash of every product it wrote.
:func:`stale_stages` compares each stamp with the present — params.yaml, the code, the
products on disk — and names every stage whose products the stamp does not vouch for:
a param or a code file that differs from the stamp, or a product that is not the one the
stamped run wrote (another orchestrator's, a checkout's). The Snakefile forces those rules to
run again and says why (``asrflow: running tune again: tune (synth): made with
tune.alpha_count=9, params.yaml says 45``), and drops Snakemake's own record of products a
stamp vouches for when that record holds other params values (DVC made them, or restored them
from its run cache). Products with no stamp at all (made before stamps existed, or put in
place by hand) are named but not forced: re-running a finished LibriSpeech chain for want of a
stamp would cost days, so Snakemake's own record decides. DVC needs no help: ``dvc.lock``
records each stage's params, code and outputs, and Snakemake's runs are committed into it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asrflow.pipeline.definition import STAGES, lookup, stage
from asrflow.pipeline.lineage import HashCache, dvc_hash

KEY = "provenance"


def _products(name: str, dataset: str) -> list[str]:
    s = stage(name)
    return [p.replace("{dataset}", dataset).rstrip("/") for p in [*s.outs, *s.plots]]


def _code(name: str) -> list[str]:
    return [f"stages/{name}.py", *stage(name).code]


def stamp(name: str, dataset: str, params: dict[str, Any], root: str | Path = ".",
          cache: HashCache | None = None) -> dict[str, Any]:
    """The stamp of stage ``name``'s run that just wrote its products (``root``-relative paths)."""
    root, cache = Path(root), cache or HashCache()
    return {"params": {k: lookup(params, k) for k in stage(name).keys(dataset, params)},
            "code": {f: cache.md5(root / f) for f in _code(name)},
            "products": {p: dvc_hash(root / p, cache) for p in _products(name, dataset)}}


@dataclass(frozen=True)
class Stale:
    """A stage of a dataset whose products on disk its stamp does not vouch for, and why."""

    stage: str
    dataset: str
    reasons: list[str]
    stamped: bool = True  # False: no stamp at all (products older than stamps, or put there by hand)

    def __str__(self) -> str:
        return f"{self.stage} ({self.dataset}): {'; '.join(self.reasons)}"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _leaf_differences(key: str, was: Any, now: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, recorded, current) for every leaf that differs under ``key``."""
    if isinstance(was, dict) and isinstance(now, dict):
        return [d for k in sorted(set(was) | set(now), key=str)
                for d in _leaf_differences(f"{key}.{k}", was.get(k, "<absent>"), now.get(k, "<absent>"))]
    return [] if was == now else [(key, was, now)]


def _differences(recorded: dict[str, Any], name: str, dataset: str, params: dict[str, Any], root: Path,
                 cache: HashCache) -> list[str]:
    out = []
    for key in stage(name).keys(dataset, params):
        was = recorded.get("params", {}).get(key, "<not recorded>")
        out += [f"made with {k}={_short(a)}, params.yaml says {_short(b)}"
                for k, a, b in _leaf_differences(key, was, lookup(params, key))]
    code = recorded.get("code", {})
    changed = [f for f in _code(name) if f not in code or not (root / f).is_file() or cache.md5(root / f) != code[f]]
    if changed:
        out.append(f"made by other code ({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})")
    products = recorded.get("products", {})
    for p in _products(name, dataset):
        if p not in products or dvc_hash(root / p, cache) != products[p]:
            out.append(f"{p} is not what the stamped run wrote (another orchestrator's run, or a checkout)")
    return out


def hash_cache(dataset: str, root: str | Path = ".") -> HashCache:
    """The file-hash cache the stages, the report and this check share for a dataset."""
    return HashCache(Path(root) / "cache" / dataset / "dvc-hashes.json")


def stale_stages(params: dict[str, Any], root: str | Path = ".") -> list[Stale]:
    """Every (stage, dataset) whose products all exist but whose stamp (in its lineage record)
    differs from params.yaml's values, the code, or the products on disk, or is missing (see
    :func:`survey`)."""
    return survey(params, root)[0]


def survey(params: dict[str, Any], root: str | Path = ".") -> tuple[list[Stale], list[tuple[str, str, list[str]]]]:
    """The stale stages (:func:`stale_stages`), and for every other stage with a stamp, its
    name, dataset and the paths of all its outputs: products the stamp vouches for as made under
    params.yaml's values and the present code, by whichever orchestrator. A stage with a
    product missing is left out: both orchestrators run it anyway. File hashes are cached
    by (path, size, mtime, inode), so only files that changed are read."""
    root = Path(root)
    stale, vouched = [], []
    for dataset in params.get("datasets", {}):
        cache = hash_cache(dataset, root)
        for s in STAGES:
            products = _products(s.name, dataset)
            if not products or not all((root / p).exists() for p in products):
                continue
            record_path = root / s.lineage.replace("{dataset}", dataset)
            try:
                recorded = json.loads(record_path.read_text()).get(KEY)
            except (OSError, ValueError, AttributeError):
                recorded = None
            if not isinstance(recorded, dict):
                stale.append(Stale(s.name, dataset, [f"no provenance stamp in {record_path.relative_to(root)}: its "
                                                     "products predate stamps or were put there by hand"], False))
                continue
            reasons = _differences(recorded, s.name, dataset, params, root, cache)
            if reasons:
                stale.append(Stale(s.name, dataset, reasons))
            else:
                vouched.append((s.name, dataset, [o.replace("{dataset}", dataset).rstrip("/") for o in s.all_outs]))
        if cache.entries and (root / "cache" / dataset).is_dir():
            cache.save()
    return stale, vouched

"""Loading and validating params.yaml.

Every stage entry point calls :func:`load_params` before doing any work, so a bad
value stops the stage with the offending key's name, whichever orchestrator ran it.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from asrflow.features.augment_config import AugmentConfig

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the key and what is allowed."""


def load_schema() -> dict[str, Any]:
    """The JSON schema for params.yaml (the same file Snakemake's validate() reads)."""
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _pattern_whole_value(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]):
    """The schema's ``pattern``, matched against the whole value (``re.fullmatch``).

    JSON Schema's ``pattern`` is a search, and with Python's ``re`` a closing ``$`` also
    matches before a final newline: ``train.rdzv_endpoint: "localhost:0\\n"`` passed
    ``^...:[0-9]+$``. Matching the whole value closes that for every pattern, present and future.
    """
    if validator.is_type(instance, "string") and not re.fullmatch(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r} (the whole value must)")


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern_whole_value})


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = error.message.split("(")[-1].rstrip(")") if "(" in error.message else error.message
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"params.yaml: unknown key under '{key}': {extra}{hint}"
    if error.validator == "enum":
        return f"params.yaml: '{key}' is {error.instance!r}; allowed values: {error.validator_value}"
    if error.validator == "type":
        return f"params.yaml: '{key}' is {error.instance!r}; expected type {error.validator_value}"
    if error.validator == "required":
        return f"params.yaml: '{key}': {error.message}"
    if error.validator in ("oneOf", "anyOf") and "description" in error.schema:
        return f"params.yaml: '{key}' is {error.instance!r}; expected {error.schema['description']}"
    return f"params.yaml: '{key}': {error.message}"


def _check_semantics(p: dict[str, Any]) -> None:
    """Checks a schema cannot express: ordered ranges, feasible speaker split."""
    entries = {f"datasets.{name}": ds for name, ds in p["datasets"].items()}
    entries.update({f"datasets.{name}.parts.{part}": e for name, ds in p["datasets"].items()
                    for part, e in ds.get("parts", {}).items()})
    synths = {name: ds for name, ds in entries.items() if ds["source"] == "synth"}
    ranges = [(f"{name}.{k}", ds[k]) for name, ds in synths.items() for k in ("rate", "pitch")]
    ranges += [("tune.alpha", p["tune"]["alpha"]),
              ("tune.beta", p["tune"]["beta"])]
    for key, (lo, hi) in ranges:
        if lo > hi:
            raise ParamsError(f"params.yaml: '{key}' is [{lo}, {hi}]: a range must be [min, max] with min <= max")
    if p["manifest"]["min_duration"] >= p["manifest"]["max_duration"]:
        raise ParamsError("params.yaml: 'manifest.min_duration' must be below 'manifest.max_duration' "
                          f"(got {p['manifest']['min_duration']} and {p['manifest']['max_duration']})")
    lm, decode = p["lm"], p["decode"]
    if lm["quantize"] and lm["binary_type"] != "trie":
        raise ParamsError("params.yaml: 'lm.quantize' needs 'lm.binary_type: trie' (probing tables are not quantised)")
    prune = lm["prune"]
    if prune and (prune[0] != 0 or any(a > b for a, b in zip(prune, prune[1:])) or len(prune) > lm["order"]):
        raise ParamsError(f"params.yaml: 'lm.prune' is {prune}: lmplz needs at most one threshold per order "
                          f"({lm['order']}), starting with 0 (unigrams are never pruned) and non-decreasing")
    if decode["mode"] == "lexicon_free" and not lm["char_order"]:
        raise ParamsError("params.yaml: 'decode.mode: lexicon_free' needs a character LM: set 'lm.char_order' "
                          "(e.g. 6)")
    if decode["mode"] == "lexicon_free" and p["vocab"]["units"] == "bpe":
        raise ParamsError("params.yaml: 'decode.mode: lexicon_free' spells characters, but 'vocab.units' is bpe: "
                          "use decode.mode: lexicon (the lexicon is spelled in the pieces)")
    ds2 = p["model"]["deepspeech2"]
    if ds2["lookahead"] and ds2["bidirectional"]:
        raise ParamsError("params.yaml: 'model.deepspeech2.lookahead' is for unidirectional models: set "
                          "'model.deepspeech2.bidirectional: false' or 'model.deepspeech2.lookahead: 0'")
    for fam in ("jasper", "quartznet"):
        rows = {"subsampling": [[0, p["model"][fam]["subsampling"]["kernel"]]], "blocks": p["model"][fam]["blocks"],
                "epilog": p["model"][fam]["epilog"]}
        for part, items in rows.items():
            for i, row in enumerate(items):
                if row[1] % 2 == 0:
                    where = f"model.{fam}." + ("subsampling.kernel" if part == "subsampling" else f"{part}[{i}]")
                    raise ParamsError(f"params.yaml: '{where}' has kernel {row[1]}: kernels must be odd, so that an "
                                      "output frame stays centred on its input")
    conf = p["model"]["conformer"]
    if conf["d_model"] % conf["heads"] or conf["conv_kernel"] % 2 == 0:
        raise ParamsError(f"params.yaml: 'model.conformer': d_model ({conf['d_model']}) must be a multiple of heads "
                          f"({conf['heads']}) and conv_kernel ({conf['conv_kernel']}) odd")
    own = p["train_per_dataset"]
    missing, unknown = sorted(set(p["datasets"]) - set(own)), sorted(set(own) - set(p["datasets"]))
    if missing:
        raise ParamsError(f"params.yaml: 'train_per_dataset' has no entry for dataset {missing[0]!r}: add "
                          f"'{missing[0]}: {{}}' (its own train settings; {{}} trains it as the train block says)")
    if unknown:
        raise ParamsError(f"params.yaml: 'train_per_dataset.{unknown[0]}' names no dataset "
                          f"(defined: {', '.join(p['datasets'])})")
    augments = {"train.augment": p["train"]["augment"]}
    augments.update({f"{block}.{name}.augment": t["augment"] for block in ("train_per_family", "train_per_dataset")
                     for name, t in p[block].items() if "augment" in t})
    for where, steps in augments.items():
        try:  # each augmentation step: known type and keys, probabilities, ranges, a usable noise dir
            AugmentConfig.from_params(steps, where=where)
        except ValueError as e:
            raise ParamsError(f"params.yaml: {e}") from e
    bins = p["evaluate"]["duration_bins"]
    if bins[0] != 0 or any(a >= b for a, b in zip(bins, bins[1:])):
        raise ParamsError(f"params.yaml: 'evaluate.duration_bins' is {bins}: edges in seconds must start at 0 "
                          "and increase")
    for name, s in synths.items():
        pool = len(s["voices"]) * len(s["variants"])
        held = s["dev_speakers"] + s["test_speakers"]
        if held >= pool:
            raise ParamsError(f"params.yaml: '{name}.dev_speakers' + 'test_speakers' = {held} leaves no "
                              f"training speaker out of {pool} voice x variant pairs")
        missing = sorted({x for v in s["splits"].values() for x in v} - set(s["utterances"]))
        if missing:
            raise ParamsError(f"params.yaml: '{name}.splits' names subsets {missing} that "
                              f"'{name}.utterances' does not generate ({', '.join(s['utterances'])})")
        if "word_zipf" in s and s["language"] != "zh":
            raise ParamsError(f"params.yaml: '{name}.word_zipf' weights the Mandarin generator's words; the English "
                              "generator has weights of its own: remove it")
    if p["dataset"] not in p["datasets"]:
        raise ParamsError(f"params.yaml: 'dataset' is {p['dataset']!r}, which 'datasets' does not define "
                          f"(defined: {', '.join(p['datasets'])})")
    for name, ds in entries.items():
        subsets = [x for v in ds["splits"].values() for x in v]
        if ds["source"] != "combine" and len(set(subsets)) != len(subsets):
            raise ParamsError(f"params.yaml: '{name}.splits' lists a subset in more than one split")
        if ".parts." not in name and not any(split.startswith("test") for split in ds["splits"]):
            raise ParamsError(f"params.yaml: '{name}.splits' has no split named test*")
        if ds["source"] == "combine":
            _check_combined(name, ds)


def _check_combined(name: str, ds: dict[str, Any]) -> None:
    """A combined dataset's splits name its parts, each of which has that split; its weights
    name parts; its parts read audio and text as it does."""
    parts = ds["parts"]
    for split, names in ds["splits"].items():
        for part in names:
            if part not in parts:
                raise ParamsError(f"params.yaml: '{name}.splits.{split}' names {part!r}, which '{name}.parts' does "
                                  f"not define (defined: {', '.join(parts)})")
            if split not in parts[part]["splits"]:
                raise ParamsError(f"params.yaml: '{name}.splits.{split}' draws on part {part!r}, whose splits have "
                                  f"no {split!r} (it has: {', '.join(parts[part]['splits'])})")
    for part in ds.get("weights", {}):
        if part not in parts:
            raise ParamsError(f"params.yaml: '{name}.weights' names {part!r}, which '{name}.parts' does not define")
    for part, e in parts.items():
        for key in ("language", "resample"):
            if e[key] != ds[key]:
                raise ParamsError(f"params.yaml: '{name}.parts.{part}.{key}' is {e[key]!r} but '{name}.{key}' is "
                                  f"{ds[key]!r}: a combined dataset's parts must agree with it")


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validate a params mapping against the schema and semantic rules.

    Returns the same mapping. Raises :class:`ParamsError` naming the first bad key.
    """
    validator = _Validator(load_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ParamsError(_describe(errors[0]))
    _check_semantics(params)
    return params


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml with the safe YAML loader and validate it.

    Raises :class:`ParamsError` for unreadable YAML or an invalid value.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            params = yaml.safe_load(f)
    except FileNotFoundError as e:
        raise ParamsError(f"params file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return validate_params(params)


def check_dataset(params: dict[str, Any], dataset: str) -> None:
    """Raise :class:`ParamsError` unless ``dataset`` is one params.yaml defines."""
    if dataset not in params["datasets"]:
        raise ParamsError(f"unknown dataset {dataset!r}; params.yaml defines: {', '.join(params['datasets'])}")


def dataset_splits(params: dict[str, Any], dataset: str) -> dict[str, list[str]]:
    """The split -> subsets mapping for ``dataset``."""
    try:
        return copy.deepcopy(params["datasets"][dataset]["splits"])
    except KeyError as e:
        raise ParamsError(f"params.yaml: no 'datasets.{dataset}.splits' for dataset '{dataset}'") from e


def eval_splits(params: dict[str, Any], dataset: str) -> list[str]:
    """Names of the evaluated splits (those starting with 'test'), in params order."""
    return [s for s in dataset_splits(params, dataset) if s.startswith("test")]


class UndeclaredParamsRead(ParamsError):
    """A stage read a params.yaml key the pipeline definition does not declare for it."""


def covers(declared: list[str] | tuple[str, ...], key: str) -> bool:
    """Whether a read of ``key`` (a dotted path: a leaf, or a whole subtree) is within the
    ``declared`` keys: the key itself, or one under a declared block."""
    return any(key == d or key.startswith(d + ".") for d in declared)


class ParamsView(dict):
    """params.yaml as a stage reads it: the same nested mapping, which records the dotted key
    of every value read and refuses a read outside the keys the stage declares.

    Reading a leaf (``p["train"]["lr"]``, ``.get``) records that key; going through a mapping
    on the way records nothing. What reads a mapping as a whole (iterating it, ``len``,
    ``items()``/``values()``, ``**``, ``json.dumps``, :meth:`to_dict`) records the mapping's key,
    since the stage then depends on everything under it. So the keys recorded are what the
    stage's output can depend on, at the granularity the code reads them.

    A dict subclass, so the library's ``isinstance(x, dict)`` checks hold; it pickles, copies
    and dumps (YAML, JSON) as the plain mapping it wraps."""

    def __init__(self, data: dict[str, Any], declared: tuple[str, ...] | None = None, stage: str = "",
                 path: str = "", reads: set[str] | None = None) -> None:
        self._path, self._declared, self._stage = path, declared, stage
        self._reads = reads if reads is not None else set()
        super().__init__({k: ParamsView(v, declared, stage, self._key(k), self._reads) if isinstance(v, dict) else v
                          for k, v in data.items()})

    def _key(self, k: Any) -> str:
        return f"{self._path}.{k}" if self._path else str(k)

    def _record(self, key: str) -> None:
        if self._declared is not None and not covers(self._declared, key):
            raise UndeclaredParamsRead(
                f"stage '{self._stage}' reads params key '{key}', which the pipeline definition does not declare "
                f"for it (src/asrflow/pipeline/definition.py; declared: {', '.join(self._declared) or 'none'}): "
                "neither orchestrator would re-run it when that key changes")
        self._reads.add(key)

    @property
    def reads(self) -> list[str]:
        """The keys read so far through this view or any part of it, minimal: a key under a
        recorded block is left out."""
        keys = sorted(self._reads)
        return [k for k in keys if not covers([d for d in keys if d != k], k)]

    def __getitem__(self, k: Any) -> Any:
        v = super().__getitem__(k)
        if not isinstance(v, ParamsView):
            self._record(self._key(k))
        return v

    def get(self, k: Any, default: Any = None) -> Any:
        return self[k] if dict.__contains__(self, k) else default

    def __contains__(self, k: Any) -> bool:
        present = dict.__contains__(self, k)
        if present:
            self[k]
        return present

    def _whole(self) -> None:
        if self._path:
            self._record(self._path)
        else:  # the whole file
            for k in dict.keys(self):
                self._record(str(k))

    def __iter__(self):
        self._whole()
        return super().__iter__()

    def __len__(self) -> int:
        self._whole()
        return super().__len__()

    def keys(self):
        self._whole()
        return super().keys()

    def items(self):
        self._whole()
        return super().items()

    def values(self):
        self._whole()
        return super().values()

    def to_dict(self) -> dict[str, Any]:
        """A plain deep copy (recorded as a read of the whole mapping)."""
        self._whole()
        return self._plain()

    def _plain(self) -> dict[str, Any]:
        return {k: v._plain() if isinstance(v, ParamsView) else copy.deepcopy(v) for k, v in dict.items(self)}

    def unrecorded(self) -> dict[str, Any]:
        """The whole configuration as a plain mapping, *not* recorded as read: for recording the
        run's configuration (MLflow params, the report's comparison), never for computing a product."""
        return self._plain()

    def copy(self) -> dict[str, Any]:
        return self.to_dict()

    def __reduce_ex__(self, protocol: Any) -> Any:
        return dict, (self.to_dict(),)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return self.to_dict()

    def __or__(self, other: Any) -> dict[str, Any]:
        return {**self.to_dict(), **other}


yaml.SafeDumper.add_representer(ParamsView, lambda dumper, v: dumper.represent_dict(v.to_dict()))

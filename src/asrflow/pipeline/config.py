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
    ranges = [("download.synth.rate", p["download"]["synth"]["rate"]),
              ("download.synth.pitch", p["download"]["synth"]["pitch"]),
              ("tune.alpha", p["tune"]["alpha"]),
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
    if p["train"]["lookahead"] and p["train"]["bidirectional"]:
        raise ParamsError("params.yaml: 'train.lookahead' is for unidirectional models: set 'train.bidirectional: "
                          "false' or 'train.lookahead: 0'")
    try:  # each augmentation step: known type and keys, probabilities, ranges, a usable noise dir
        AugmentConfig.from_params(p["train"]["augment"])
    except ValueError as e:
        raise ParamsError(f"params.yaml: {e}") from e
    bins = p["evaluate"]["duration_bins"]
    if bins[0] != 0 or any(a >= b for a, b in zip(bins, bins[1:])):
        raise ParamsError(f"params.yaml: 'evaluate.duration_bins' is {bins}: edges in seconds must start at 0 "
                          "and increase")
    s = p["download"]["synth"]
    pool = len(s["voices"]) * len(s["variants"])
    held = s["dev_speakers"] + s["test_speakers"]
    if held >= pool:
        raise ParamsError(f"params.yaml: 'download.synth.dev_speakers' + 'test_speakers' = {held} leaves no "
                          f"training speaker out of {pool} voice x variant pairs")
    for name, ds in p["datasets"].items():
        subsets = [x for v in ds["splits"].values() for x in v]
        if len(set(subsets)) != len(subsets):
            raise ParamsError(f"params.yaml: 'datasets.{name}.splits' lists a subset in more than one split")
        if not any(split.startswith("test") for split in ds["splits"]):
            raise ParamsError(f"params.yaml: 'datasets.{name}.splits' has no split named test*")


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

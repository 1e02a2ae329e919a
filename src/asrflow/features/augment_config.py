"""The ``train.augment`` list of params.yaml, parsed and validated into typed steps (see
:mod:`asrflow.features.augment` for what each step does). Light on purpose: params
validation imports it on every Snakefile parse, so it loads neither numpy nor torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Union

# Noise files are looked for (recursively) with these suffixes; soundfile decodes them all.
NOISE_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass(frozen=True)
class SpeedStep:
    """Speed perturbation by resampling: factor f makes the utterance last 1/f as long and
    raises its pitch by f. A factor is drawn uniformly from ``factors`` (1.0 = unchanged)."""

    type: ClassVar[str] = "speed"
    prob: float
    factors: tuple[float, ...]


@dataclass(frozen=True)
class VolumeStep:
    """Gain drawn uniformly in ``gain_db`` = [low, high] dB."""

    type: ClassVar[str] = "volume"
    prob: float
    gain_db: tuple[float, float]


@dataclass(frozen=True)
class ShiftStep:
    """Time shift by a whole number of samples drawn uniformly in +-``max_ms``; positive
    delays the signal. The length is kept: what moves out is dropped, the gap is zeros."""

    type: ClassVar[str] = "shift"
    prob: float
    max_ms: float


@dataclass(frozen=True)
class NoiseStep:
    """Additive noise from the audio files under ``dir`` (recursively; .wav/.flac/.ogg, any
    sample rate and channel count: resampled and averaged to mono) mixed at an SNR drawn
    uniformly in ``snr_db``. A relative ``dir`` is resolved against the working directory (or
    the ``root`` given to :meth:`AugmentConfig.from_params`)."""

    type: ClassVar[str] = "noise"
    prob: float
    dir: str | None
    snr_db: tuple[float, float]
    files: tuple[str, ...] = field(default=(), repr=False)  # found by from_params, not a params key


@dataclass(frozen=True)
class SpecAugmentStep:
    """SpecAugment masks on the normalised features (value 0 = the mean after normalisation).

    ``freq_masks`` masks of width uniform in [0, freq_width] mel bins, then ``time_masks``
    masks of width uniform in [0, min(time_width, floor(time_max_frac * frames))] frames;
    positions uniform, masks may overlap (as in Park et al. 2019). ``time_max_frac`` (0.2 in
    params.yaml) keeps one time mask from hiding more than a fifth of a short utterance.
    """

    type: ClassVar[str] = "specaugment"
    prob: float
    freq_masks: int
    freq_width: int
    time_masks: int
    time_width: int
    time_max_frac: float


AugmentStep = Union[SpeedStep, VolumeStep, ShiftStep, NoiseStep, SpecAugmentStep]
STEP_CLASSES: dict[str, type] = {c.type: c for c in (SpeedStep, VolumeStep, ShiftStep, NoiseStep, SpecAugmentStep)}
WAVE_TYPES = ("speed", "volume", "shift", "noise")


def _keys(cls: type) -> list[str]:
    """The params keys of a step class (``type`` first, internal fields left out)."""
    return ["type"] + [f.name for f in fields(cls) if f.name != "files"]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def noise_files(directory: str | Path) -> list[Path]:
    """The audio files under ``directory`` (sorted, recursive) that soundfile can read and
    that hold at least one sample. Raises ValueError naming an unreadable or empty one."""
    import soundfile as sf  # only when a noise step is on

    out = []
    for p in sorted(Path(directory).rglob("*")):
        if p.suffix.lower() not in NOISE_SUFFIXES or not p.is_file():
            continue
        try:
            info = sf.info(str(p))
        except Exception as e:  # soundfile raises several types for bad files
            raise ValueError(f"noise file {p}: cannot read: {e}") from e
        if info.frames <= 0:
            raise ValueError(f"noise file {p}: no samples")
        out.append(p)
    return out


@dataclass(frozen=True)
class AugmentConfig:
    """The parsed ``train.augment`` list."""

    steps: tuple[AugmentStep, ...] = ()

    @property
    def enabled(self) -> bool:
        """Whether any step can change an utterance (some probability above 0)."""
        return any(s.prob > 0 for s in self.steps)

    @classmethod
    def from_params(cls, entries: list[dict[str, Any]] | None, where: str = "train.augment",
                    root: str | Path | None = None) -> "AugmentConfig":
        """Validate and parse the list; ``None`` is the empty list.

        Raises ValueError naming ``where[i]``, the step type and the offending key and value.
        A noise step with ``prob > 0`` must name a ``dir`` holding readable audio files (checked
        here; a noise step with ``prob: 0`` is inert and its ``dir`` is not looked at).
        """
        if entries is None:
            return cls()
        if not isinstance(entries, list):
            raise ValueError(f"{where}: expected a list of steps, got {type(entries).__name__}")
        return cls(tuple(_parse_step(e, f"{where}[{i}]", root) for i, e in enumerate(entries)))

    def to_params(self) -> list[dict[str, Any]]:
        """The list as params.yaml would hold it (for logging; ``from_params`` round-trips)."""
        out = []
        for s in self.steps:
            d: dict[str, Any] = {"type": s.type}
            for f in fields(s):
                if f.name != "files":
                    v = getattr(s, f.name)
                    d[f.name] = list(v) if isinstance(v, tuple) else v
            out.append(d)
        return out


def _parse_step(entry: Any, at: str, root: str | Path | None) -> AugmentStep:
    if not isinstance(entry, dict):
        raise ValueError(f"{at}: expected a mapping with 'type' and 'prob', got {entry!r}")
    t = entry.get("type")
    if t not in STEP_CLASSES:
        raise ValueError(f"{at}: type={t!r}: unknown step type (expected one of {', '.join(STEP_CLASSES)})")
    step_cls = STEP_CLASSES[t]
    allowed = _keys(step_cls)
    at = f"{at} ({t})"
    for k in entry:
        if k not in allowed:
            raise ValueError(f"{at}: unknown key {k!r} (allowed: {', '.join(allowed)})")
    if "prob" not in entry:
        raise ValueError(f"{at}: missing key 'prob'")

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"{at}: {key}={entry[key]!r}: {why}")

    def num(key: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> float:
        v = entry[key]
        if not _is_num(v):
            raise bad(key, "expected a finite number")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise bad(key, f"must be {'>' if lo_open else '>='} {lo}")
        if hi is not None and v > hi:
            raise bad(key, f"must be <= {hi}")
        return float(v)

    def integer(key: str) -> int:
        v = entry[key]
        if not _is_int(v) or v < 0:
            raise bad(key, "expected a non-negative integer")
        return v

    def rng_pair(key: str) -> tuple[float, float]:
        v = entry[key]
        if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_num(x) for x in v):
            raise bad(key, "expected [low, high], two finite numbers")
        if v[0] > v[1]:
            raise bad(key, "reversed range (low > high)")
        return float(v[0]), float(v[1])

    kw: dict[str, Any] = {"prob": num("prob", 0.0, 1.0)}
    if t == "speed":
        if "factors" in entry:
            v = entry["factors"]
            if not isinstance(v, (list, tuple)) or not v or not all(_is_num(x) for x in v):
                raise bad("factors", "expected a non-empty list of numbers")
            if any(x <= 0 for x in v):
                raise bad("factors", "every factor must be > 0")
            kw["factors"] = tuple(float(x) for x in v)
    elif t == "volume":
        if "gain_db" in entry:
            kw["gain_db"] = rng_pair("gain_db")
    elif t == "shift":
        if "max_ms" in entry:
            kw["max_ms"] = num("max_ms", 0.0)
    elif t == "noise":
        if "snr_db" in entry:
            kw["snr_db"] = rng_pair("snr_db")
        d = entry.get("dir")
        if d is not None and (not isinstance(d, str) or not d):
            raise bad("dir", "expected a directory path or null")
        kw["dir"] = d
        if kw["prob"] > 0:
            if d is None:
                raise ValueError(f"{at}: prob={entry['prob']!r} needs a noise 'dir' (dir is null)")
            path = Path(d) if root is None or Path(d).is_absolute() else Path(root) / d
            if not path.is_dir():
                raise bad("dir", f"not a directory ({path})")
            try:
                files = noise_files(path)
            except ValueError as e:
                raise bad("dir", str(e)) from None
            if not files:
                raise bad("dir", f"no audio files ({', '.join(NOISE_SUFFIXES)}) under {path}")
            kw["files"] = tuple(str(p.resolve()) for p in files)
    else:  # specaugment
        for k in ("freq_masks", "freq_width", "time_masks", "time_width"):
            if k in entry:
                kw[k] = integer(k)
        if "time_max_frac" in entry:
            kw["time_max_frac"] = num("time_max_frac", 0.0, 1.0, lo_open=True)
    missing = [k for k in allowed if k not in entry]
    if missing:  # no second set of defaults: params.yaml's train.augment lists every key of each type
        raise ValueError(f"{at}: missing {', '.join(map(repr, missing))}: a step lists all its keys "
                         f"({', '.join(allowed)}); params.yaml's train.augment has each type in full")
    return step_cls(**kw)


# JSON-schema fragment for ``train.augment`` (self-contained: no $ref), one oneOf branch per
# step type. Ranges' order (low <= high) and the noise directory are checked by from_params.
_PROB = {"type": "number", "minimum": 0, "maximum": 1}
_RANGE = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
_NONNEG_INT = {"type": "integer", "minimum": 0}


def _branch(t: str, **props: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["type", "prob", *props],
            "properties": {"type": {"const": t}, "prob": _PROB, **props}}


SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"oneOf": [
        _branch("speed", factors={"type": "array", "minItems": 1,
                                  "items": {"type": "number", "exclusiveMinimum": 0}}),
        _branch("volume", gain_db=_RANGE),
        _branch("shift", max_ms={"type": "number", "minimum": 0}),
        _branch("noise", dir={"type": ["string", "null"], "minLength": 1}, snr_db=_RANGE),
        _branch("specaugment", freq_masks=_NONNEG_INT, freq_width=_NONNEG_INT, time_masks=_NONNEG_INT,
                time_width=_NONNEG_INT, time_max_frac={"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
    ]},
}

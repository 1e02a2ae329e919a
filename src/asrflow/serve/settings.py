"""What a packaged model is made of: the tuned :class:`DecoderSettings`, the LM files each
decoding mode needs (:data:`LM_FILES`) and the artifact names inside a package."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asrflow.decode.beam import BeamConfig

#: File names inside a package's data directory; the LM files keep their own names
#: (``lm.bin``, ``lexicon.txt``, ``char.bin``).
CHECKPOINT, DECODER = "model.pt", "decoder.json"
#: The package's data directory (``data/`` of the MLflow model) and the module MLflow
#: imports to load it (``loader_module``: the installed asrflow's code, not the package's).
DATA_DIR, LOADER_MODULE = "asrflow", "asrflow.serve.model"
#: LM files each decoding mode reads from the LM directory.
LM_FILES = {"lexicon": ("lm.bin", "lexicon.txt"), "lexicon_free": ("char.bin",)}


@dataclass(frozen=True)
class DecoderSettings:
    """Tuned beam-search settings: LM weight ``alpha``, word (lexicon-free: separator)
    score ``beta``, and the ``decode`` block of params.yaml. ``tune/best.json`` holds
    exactly these keys."""

    alpha: float
    beta: float
    beam_size: int
    beam_threshold: float
    token_beam: int
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in LM_FILES:
            raise ValueError(f"decoder mode {self.mode!r} is not one of {sorted(LM_FILES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecoderSettings":
        """Settings from a dict such as ``best.json``; every setting is required, keys that
        are not settings are ignored."""
        missing = [f.name for f in fields(cls) if f.name not in d]
        if missing:
            raise ValueError(f"decoder settings lack {', '.join(missing)}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def beam_config(self) -> BeamConfig:
        """The :class:`asrflow.decode.beam.BeamConfig` part (everything but alpha and beta)."""
        from asrflow.decode.beam import BeamConfig

        return BeamConfig(beam_size=self.beam_size, beam_threshold=self.beam_threshold,
                          token_beam=self.token_beam, mode=self.mode)

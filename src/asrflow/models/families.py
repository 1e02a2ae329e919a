"""The model families a run can choose (params.yaml ``model.family``), each declared once:
its module, its network and config classes and the config values it fixes. Each family's
output frame rate is declared in :mod:`asrflow.models.frames` (torch-free, for the manifest
stage). Nothing outside the models package branches on a family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


def _deepspeech2():
    from asrflow.models import deepspeech2
    return deepspeech2.DeepSpeech2, deepspeech2.ModelConfig


def _jasper():
    from asrflow.models import jasper
    return jasper.Jasper, jasper.JasperConfig


def _conformer():
    from asrflow.models import conformer
    return conformer.Conformer, conformer.ConformerConfig


@dataclass(frozen=True)
class Family:
    name: str
    classes: Callable[[], tuple[type, type]]                 # (network, config): imported when first used
    fixed: dict[str, Any] = field(default_factory=dict)      # config values the family fixes (not in params)

    def config_from_params(self, block: dict[str, Any], n_mels: int, vocab_size: int):
        return self.classes()[1].from_params({**block, **self.fixed}, n_mels, vocab_size)

    def build(self, cfg):
        net = self.classes()[0](cfg)
        net.family = self.name  # what checkpoints record (Jasper's class serves two families)
        return net

    def from_dict(self, d: dict[str, Any]):
        return self.build(self.classes()[1].from_dict(d))


FAMILIES = {f.name: f for f in (
    Family("deepspeech2", _deepspeech2),
    Family("jasper", _jasper, fixed={"separable": False}),
    Family("quartznet", _jasper, fixed={"separable": True, "dense_residual": False}),
    Family("conformer", _conformer),
)}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; asrflow has {', '.join(FAMILIES)}") from None


def chosen(model: dict[str, Any]) -> tuple[Family, dict[str, Any]]:
    """The family params.yaml's ``model`` block selects, and its own block."""
    f = family(model["family"])
    return f, model[f.name]


def selected(model: dict[str, Any]) -> dict[str, Any]:
    """params.yaml's ``model`` block with the chosen family's block only (what training reads)."""
    return {"family": model["family"], model["family"]: model[model["family"]]}


def build_model(model: dict[str, Any], n_mels: int, vocab_size: int):
    """The network params.yaml's ``model`` block describes, freshly initialised."""
    f, block = chosen(model)
    return f.build(f.config_from_params(block, n_mels, vocab_size))


def model_from_checkpoint(ckpt: dict[str, Any]):
    """The (untrained) network of a checkpoint's ``model_family`` and ``model_config``
    (checkpoints from before families were recorded hold a DeepSpeech2)."""
    return family(ckpt.get("model_family", "deepspeech2")).from_dict(ckpt["model_config"])


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())

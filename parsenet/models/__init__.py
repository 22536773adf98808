"""Models: L2Norm, the VGG16 trunks, ParseNet's fusion head, the FCN baselines, ``build_model``."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from parsenet.errors import ConfigError
from parsenet.models.head import FusionHead
from parsenet.models.l2norm import L2Norm
from parsenet.models.parsenet import SegmentationNet
from parsenet.models.vgg import VGGTrunk

# Keys of the backbone node that choose the initial weights rather than the architecture.
INITIALISATION_KEYS = ("pretrained",)


def _options(cfg: Mapping[str, Any], section: str, target: type) -> dict[str, Any]:
    """The non-null keys of ``cfg[section]``, checked against ``target``'s constructor."""
    node = dict(cfg.get(section) or {})
    parameters = inspect.signature(target).parameters.values()
    allowed = {p.name for p in parameters if p.default is not p.empty} | set(INITIALISATION_KEYS)
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ConfigError(
            f"model.{section}.{unknown[0]} is not a setting; choose among {sorted(allowed)}"
        )
    return {k: v for k, v in node.items() if v is not None and k not in INITIALISATION_KEYS}


def build_model(cfg: Mapping[str, Any], num_classes: int) -> SegmentationNet:
    """Build the (randomly initialised) network a ``model`` config node describes.

    Args:
        cfg: mapping with a ``backbone`` node (``arch``, ``width_mult``, ``dropout``; its
            ``pretrained`` key is applied by
            :func:`parsenet.models.pretrained.initialise_backbone`), a ``head`` node
            (:class:`FusionHead` arguments) and ``upsample``; see ``configs/model/*.yaml``.
            Missing keys take the constructors' defaults; other top-level keys (``name``,
            ``input_norm``) are ignored here.
        num_classes: number of output classes, taken from the dataset.
    """
    backbone = _options(cfg, "backbone", VGGTrunk)
    head = _options(cfg, "head", FusionHead)
    try:
        return SegmentationNet(
            num_classes, backbone=backbone, head=head, upsample=cfg.get("upsample") or "deconv"
        )
    except ValueError as error:
        raise ConfigError(f"model: {error}") from None


__all__ = ["L2Norm", "VGGTrunk", "FusionHead", "SegmentationNet", "build_model"]

"""Models: L2Norm, the trunks (VGG16, dilated ResNets, MobileNetV3), ParseNet's fusion head and
torchvision's heads, ``build_model``."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from parsenet.errors import ConfigError
from parsenet.models.catalog import head_class, trunk_class
from parsenet.models.head import FusionHead
from parsenet.models.l2norm import L2Norm
from parsenet.models.parsenet import SegmentationNet
from parsenet.models.vgg import VGGTrunk

# Keys of the backbone node that choose the initial weights rather than the architecture.
INITIALISATION_KEYS = ("pretrained",)
# The key of the head node that chooses the head's class (see parsenet.models.catalog).
HEAD_TYPE_KEY = "type"


def _options(cfg: Mapping[str, Any], section: str, target: type, extra: tuple = ()) -> dict:
    """The non-null keys of ``cfg[section]``, checked against ``target``'s constructor (plus
    ``extra`` keys, kept, and :data:`INITIALISATION_KEYS`, dropped)."""
    node = dict(cfg.get(section) or {})
    parameters = inspect.signature(target).parameters.values()
    allowed = {p.name for p in parameters if p.default is not p.empty}
    allowed |= set(INITIALISATION_KEYS) | set(extra)
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ConfigError(
            f"model.{section}.{unknown[0]} is not a setting of {target.__name__}; choose among "
            f"{sorted(allowed)}"
        )
    return {k: v for k, v in node.items() if v is not None and k not in INITIALISATION_KEYS}


def build_model(cfg: Mapping[str, Any], num_classes: int) -> SegmentationNet:
    """Build the (randomly initialised) network a ``model`` config node describes.

    Args:
        cfg: mapping with a ``backbone`` node (``arch`` and its trunk's arguments; its
            ``pretrained`` key is applied by
            :func:`parsenet.models.pretrained.initialise_backbone`), a ``head`` node (``type``
            and its head's arguments) and ``upsample``; see ``configs/model/``.
            Missing keys take the constructors' defaults; other top-level keys (``name``,
            ``input_norm``) are ignored here.
        num_classes: number of output classes, taken from the dataset.
    """
    try:
        trunk = trunk_class((cfg.get("backbone") or {}).get("arch"))
        head_type = head_class((cfg.get("head") or {}).get(HEAD_TYPE_KEY))
    except ValueError as error:
        raise ConfigError(f"model: {error}") from None
    backbone = _options(cfg, "backbone", trunk)
    head = _options(cfg, "head", head_type, extra=(HEAD_TYPE_KEY,))
    try:
        return SegmentationNet(
            num_classes, backbone=backbone, head=head, upsample=cfg.get("upsample") or "deconv"
        )
    except ValueError as error:
        raise ConfigError(f"model: {error}") from None


__all__ = ["L2Norm", "VGGTrunk", "FusionHead", "SegmentationNet", "build_model"]

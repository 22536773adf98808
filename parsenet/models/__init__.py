"""Models: L2Norm, the reduced VGG16 trunk, ParseNet and the FCN baseline, and ``build_model``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parsenet.errors import ConfigError
from parsenet.models.l2norm import L2Norm
from parsenet.models.parsenet import ContextHead, SegmentationNet
from parsenet.models.vgg import ReducedVGG16

# What each architecture name means: FCN is the same trunk and classifier with no context and no
# normalisation; ParseNet adds the L2-normalised global context.
ARCHITECTURES: dict[str, dict[str, bool]] = {
    "parsenet": {"use_context": True, "normalize": True},
    "fcn": {"use_context": False, "normalize": False},
}
MODEL_OPTIONS = ("width_mult", "dropout", "fusion", "norm_scale", "context_dropout", "upsample")


def build_model(cfg: Mapping[str, Any], num_classes: int) -> SegmentationNet:
    """Build the network described by a ``model`` config node (see ``configs/model/*.yaml``).

    Args:
        cfg: mapping with ``name`` (``parsenet`` or ``fcn``) and any of ``width_mult``,
            ``dropout``, ``fusion``, ``norm_scale``, ``context_dropout``, ``upsample``; other keys
            (such as ``input_norm``) are ignored here.
        num_classes: number of output classes, taken from the dataset.
    """
    name = cfg.get("name")
    if name not in ARCHITECTURES:
        raise ConfigError(f"model.name={name!r} is not one of {sorted(ARCHITECTURES)}")
    options = {key: cfg[key] for key in MODEL_OPTIONS if cfg.get(key) is not None}
    try:
        return SegmentationNet(num_classes=num_classes, **ARCHITECTURES[name], **options)
    except ValueError as error:
        raise ConfigError(f"model: {error}") from None


__all__ = ["L2Norm", "ReducedVGG16", "ContextHead", "SegmentationNet", "build_model"]

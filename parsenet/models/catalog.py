"""Which class builds each ``model.backbone.arch`` and each ``model.head.type``."""

from __future__ import annotations

from parsenet.models.head import FusionHead
from parsenet.models.head_base import SegmentationHead
from parsenet.models.mobilenet import MobileNetV3Trunk
from parsenet.models.resnet import RESNETS, ResNetTrunk
from parsenet.models.torchvision_heads import ASPPHead, FCNHead, LRASPPHead
from parsenet.models.trunk import Trunk
from parsenet.models.vgg import TRUNKS as VGG_LAYOUTS
from parsenet.models.vgg import VGGTrunk

TRUNK_CLASSES: dict[str, type[Trunk]] = {
    **dict.fromkeys(VGG_LAYOUTS, VGGTrunk),
    **dict.fromkeys(RESNETS, ResNetTrunk),
    "mobilenet_v3_large": MobileNetV3Trunk,
}
HEAD_CLASSES: dict[str, type[SegmentationHead]] = {
    "parsenet": FusionHead,
    "aspp": ASPPHead,
    "lraspp": LRASPPHead,
    "fcn_head": FCNHead,
}
DEFAULT_ARCH, DEFAULT_HEAD = "reduced_vgg16", "parsenet"


def trunk_class(arch: str | None) -> type[Trunk]:
    """The trunk class of ``model.backbone.arch`` (default ``reduced_vgg16``)."""
    arch = arch or DEFAULT_ARCH
    if arch not in TRUNK_CLASSES:
        raise ValueError(f"backbone.arch must be one of {sorted(TRUNK_CLASSES)}, got {arch!r}")
    return TRUNK_CLASSES[arch]


def head_class(kind: str | None) -> type[SegmentationHead]:
    """The head class of ``model.head.type`` (default ``parsenet``)."""
    kind = kind or DEFAULT_HEAD
    if kind not in HEAD_CLASSES:
        raise ValueError(f"head.type must be one of {sorted(HEAD_CLASSES)}, got {kind!r}")
    return HEAD_CLASSES[kind]

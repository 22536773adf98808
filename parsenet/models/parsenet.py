"""The segmentation network: a VGG16 trunk, ParseNet's fusion head, upsampling to the input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from parsenet.models.catalog import head_class, trunk_class
from parsenet.models.upsample import build_upsample


class SegmentationNet(nn.Module):
    """Trunk → head → upsampling: ParseNet, its ablations, the FCN baselines, or a torchvision
    head (ASPP, LR-ASPP, FCN) on any trunk.

    ``forward`` takes an N×3×H×W normalised image batch and returns N×K×H×W class scores (logits)
    for any H and W.

    Args:
        num_classes: number of output classes.
        backbone: ``arch`` (see :data:`~parsenet.models.catalog.TRUNK_CLASSES`) and the keyword
            arguments of its trunk class (VGG: ``width_mult``, ``dropout``; ResNet:
            ``output_stride``, ``freeze_bn``; MobileNetV3: ``width_mult``, ``output_stride``,
            ``freeze_bn``).
        head: ``type`` (``parsenet``, ``aspp``, ``lraspp``, ``fcn_head``; see
            :data:`~parsenet.models.catalog.HEAD_CLASSES`) and the keyword arguments of its
            class (for ParseNet's :class:`~parsenet.models.head.FusionHead`: ``taps``,
            ``normalize``, ``scale_init``, ``learn_scale``, ``channel_shared``,
            ``context_bins``, ``context_dropout``, ``fusion``, ``context_norm``).
        upsample: ``deconv`` (learnable, bilinear init, then crop) or ``bilinear``.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: Mapping[str, Any] | None = None,
        head: Mapping[str, Any] | None = None,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        backbone, head = dict(backbone or {}), dict(head or {})
        self.backbone = trunk_class(backbone.get("arch"))(**backbone)
        self.head = head_class(head.pop("type", None))(
            self.backbone.tap_channels, self.backbone.tap_strides, num_classes, **head
        )
        self.upsample = build_upsample(upsample, num_classes, self.head.output_stride)

    def new_layers(self) -> tuple[nn.Module, ...]:
        """The layers this network adds to its (ImageNet-pretrainable) trunk and that start from
        scratch: the head's (ParseNet: its 1×1 score convolutions; a torchvision head: all of
        it). :func:`parsenet.engine.training.optim.parameter_groups` trains them faster (the
        paper's ``lr_mult``); the L2Norm scales are a role of their own and the trunk and
        upsampling are base layers."""
        return self.head.new_layers()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = (images.shape[-2], images.shape[-1])
        features = self.backbone.features(images, self.head.trunk_taps)
        return self.upsample(self.head(features), size)

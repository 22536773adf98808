"""The segmentation network: a VGG16 trunk, ParseNet's fusion head, upsampling to the input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from parsenet.models.head import FusionHead
from parsenet.models.upsample import build_upsample
from parsenet.models.vgg import VGGTrunk


class SegmentationNet(nn.Module):
    """Trunk → fusion head → upsampling: ParseNet, its ablations, or the FCN baselines.

    ``forward`` takes an N×3×H×W normalised image batch and returns N×K×H×W class scores (logits)
    for any H and W.

    Args:
        num_classes: number of output classes.
        backbone: keyword arguments of :class:`~parsenet.models.vgg.VGGTrunk` (``arch``,
            ``width_mult``, ``dropout``).
        head: keyword arguments of :class:`~parsenet.models.head.FusionHead` (``taps``,
            ``normalize``, ``scale_init``, ``learn_scale``, ``channel_shared``, ``context_bins``,
            ``context_dropout``, ``fusion``).
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
        self.backbone = VGGTrunk(**(backbone or {}))
        self.head = FusionHead(
            self.backbone.tap_channels, self.backbone.tap_strides, num_classes, **(head or {})
        )
        self.upsample = build_upsample(upsample, num_classes, self.head.output_stride)

    def new_layers(self) -> tuple[nn.Module, ...]:
        """The layers this network adds to its (ImageNet-pretrainable) trunk and that start from
        scratch: the head's 1×1 score convolutions.
        :func:`parsenet.engine.training.optim.parameter_groups`
        trains them faster (the paper's ``lr_mult``); the L2Norm scales are a role of their own
        and the trunk and upsampling are base layers."""
        return tuple(self.head.scores.values())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = (images.shape[-2], images.shape[-1])
        features = self.backbone.features(images, self.head.trunk_taps)
        return self.upsample(self.head(features), size)

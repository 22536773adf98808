"""The heads users would otherwise pick, taken from ``torchvision.models.segmentation`` as they
are and put behind :class:`~parsenet.models.head_base.SegmentationHead`: DeepLabV3's ASPP (with
its BatchNorm image-pooling branch), LR-ASPP and the FCN head."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead as TorchvisionFCNHead
from torchvision.models.segmentation.lraspp import LRASPPHead as TorchvisionLRASPPHead

from parsenet.models.head_base import SegmentationHead, deepest


def checked_tap(tap: str | None, tap_channels: Mapping[str, int], key: str) -> str:
    """``tap``, or the deepest tap when None; one clear error for a name the trunk lacks."""
    tap = tap or deepest(tap_channels)
    if tap not in tap_channels:
        raise ValueError(f"head.{key} must be one of {tuple(tap_channels)}, got {tap!r}")
    return tap


class SingleTapHead(SegmentationHead):
    """A head that reads one tap (default: the deepest) through ``layers``, built by
    ``build(tap channels)``; scores come at that tap's stride."""

    def __init__(
        self,
        tap_channels: Mapping[str, int],
        tap_strides: Mapping[str, int],
        tap: str | None,
        build: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.tap = checked_tap(tap, tap_channels, "tap")
        self.spatial_taps, self.output_stride = (self.tap,), tap_strides[self.tap]
        self.layers = build(tap_channels[self.tap])

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.layers(features[self.tap])


class ASPPHead(SingleTapHead):
    """DeepLabV3's head on one tap: ASPP (1×1, three dilated 3×3 and the image-pooling branch —
    global average, 1×1 conv, BatchNorm, ReLU — each 256 channels) → 3×3 conv, BatchNorm, ReLU →
    1×1 classifier (torchvision's ``DeepLabHead``).

    Args:
        tap_channels, tap_strides: the trunk's tap declarations.
        num_classes: number of output classes.
        tap: the tap it reads (default: the deepest).
        atrous_rates: dilations of the three 3×3 ASPP branches.
    """

    pooled_batchnorm = True

    def __init__(
        self,
        tap_channels: Mapping[str, int],
        tap_strides: Mapping[str, int],
        num_classes: int,
        tap: str | None = None,
        atrous_rates: Sequence[int] = (12, 24, 36),
    ) -> None:
        rates = tuple(atrous_rates)
        super().__init__(
            tap_channels,
            tap_strides,
            tap,
            lambda channels: DeepLabHead(channels, num_classes, rates),
        )


class FCNHead(SingleTapHead):
    """torchvision's FCN head on one tap: 3×3 conv (in/4 channels), BatchNorm, ReLU, dropout
    0.1, 1×1 classifier.

    Args:
        tap_channels, tap_strides: the trunk's tap declarations.
        num_classes: number of output classes.
        tap: the tap it reads (default: the deepest).
    """

    def __init__(
        self,
        tap_channels: Mapping[str, int],
        tap_strides: Mapping[str, int],
        num_classes: int,
        tap: str | None = None,
    ) -> None:
        super().__init__(
            tap_channels,
            tap_strides,
            tap,
            lambda channels: TorchvisionFCNHead(channels, num_classes),
        )


class LRASPPHead(SegmentationHead):
    """LR-ASPP (Searching for MobileNetV3): the high-level tap through 1×1 conv, BatchNorm, ReLU,
    gated by a sigmoid of its global average (no BatchNorm on the pooled vector), upsampled to
    the low-level tap and classified, plus a classifier on the low-level tap
    (torchvision's ``LRASPPHead``). Scores come at the low tap's stride.

    Args:
        tap_channels, tap_strides: the trunk's tap declarations.
        num_classes: number of output classes.
        low: the low-level tap (default: the first tap at stride 8, MobileNet's ``low``).
        high: the high-level tap (default: the deepest).
        inter_channels: channels of the gated high-level branch.
    """

    def __init__(
        self,
        tap_channels: Mapping[str, int],
        tap_strides: Mapping[str, int],
        num_classes: int,
        low: str | None = None,
        high: str | None = None,
        inter_channels: int = 128,
    ) -> None:
        super().__init__()
        first_at_8 = next((tap for tap, stride in tap_strides.items() if stride == 8), None)
        self.low = checked_tap(low or first_at_8, tap_channels, "low")
        self.high = checked_tap(high, tap_channels, "high")
        self.spatial_taps, self.output_stride = (self.low, self.high), tap_strides[self.low]
        self.layers = TorchvisionLRASPPHead(
            tap_channels[self.low], tap_channels[self.high], num_classes, inter_channels
        )

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.layers({"low": features[self.low], "high": features[self.high]})

"""The MobileNetV3-Large trunk: torchvision's model without its classifier, its last stage (or
last two) dilated, as torchvision's LR-ASPP and DeepLabV3 MobileNetV3 models build it."""

from __future__ import annotations

from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large

from parsenet.models.trunk import BatchNormTrunk

# torchvision's ``features`` index of the tapped blocks: the first block at stride 8 (what
# torchvision's LR-ASPP calls ``low``: C2) and the final 1×1 convolution (``high``: C5).
LOW, HIGH = 4, 16
OUTPUT_STRIDES = (8, 16)


def dilate_past(blocks: nn.Sequential, output_stride: int) -> None:
    """Replace the strides of ``blocks`` that would take the map below 1/``output_stride`` by
    dilation of their spatial convolutions and every later one (stride 1, dilation ×2 per
    replaced stride, padding kept "same"), as ``replace_stride_with_dilation`` does for ResNets."""
    stride, dilation = 1, 1
    for block in blocks:
        spatial = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
        for conv in spatial:
            if conv.stride[0] > 1:
                if stride * conv.stride[0] > output_stride:
                    dilation *= conv.stride[0]
                    conv.stride = (1, 1)
                else:
                    stride *= conv.stride[0]
            if dilation > 1:
                conv.dilation = (dilation, dilation)
                conv.padding = (dilation * (conv.kernel_size[0] - 1) // 2,) * 2


class MobileNetV3Trunk(BatchNormTrunk):
    """torchvision's MobileNetV3-Large ``features`` at output stride 16 (default) or 8.

    Taps: ``low`` (the first block at stride 8, 40 channels at full width — LR-ASPP's low-level
    input) and ``high`` (the last 1×1 convolution, 960 channels, stride 16 or 8). Layer names are
    torchvision's ``features`` indices (``0`` … ``16``).

    Args:
        arch: ``mobilenet_v3_large``.
        width_mult: torchvision's channel multiplier (ImageNet weights exist at 1.0 only).
        output_stride: 16 (the last stage dilated, as torchvision's segmentation models) or 8
            (the last two).
        freeze_bn: keep every BatchNorm's statistics and affine parameters fixed.
        bn_momentum: running-statistics momentum of the BatchNorms (None: torchvision's).
    """

    imagenet_weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1

    def __init__(
        self,
        arch: str = "mobilenet_v3_large",
        width_mult: float = 1.0,
        output_stride: int = 16,
        freeze_bn: bool = False,
        bn_momentum: float | None = None,
    ) -> None:
        super().__init__(arch, width_mult, freeze_bn, bn_momentum)
        if arch != "mobilenet_v3_large":
            raise ValueError(f"backbone.arch must be mobilenet_v3_large, got {arch!r}")
        if not width_mult > 0:
            raise ValueError(f"backbone.width_mult must be positive, got {width_mult}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"backbone.output_stride must be 8 or 16, got {output_stride}")
        features = mobilenet_v3_large(weights=None, width_mult=width_mult).features[: HIGH + 1]
        dilate_past(features, output_stride)
        self.set_layers({str(index): block for index, block in enumerate(features)})
        self.add_tap("low", str(LOW), features[LOW].out_channels, 8)
        self.add_tap("high", str(HIGH), features[HIGH].out_channels, output_stride)
        self.configure_batchnorm()

    def trunk_key(self, torchvision_key: str) -> str | None:
        """``features.N.…`` → ``N.…``; the classifier is left out."""
        return (
            torchvision_key.removeprefix("features.")
            if torchvision_key.startswith("features.")
            else None
        )

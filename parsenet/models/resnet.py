"""Dilated ResNet trunks (``resnet50_d8``, ``resnet101_d8``): torchvision's ResNets with the
strides of their last stages replaced by dilation, as DeepLab and torchvision's segmentation models
build them."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights, resnet50, resnet101

from parsenet.models.trunk import BatchNormTrunk

# arch → (torchvision constructor, ImageNet weights: the ones torchvision's own DeepLabV3/FCN
# ResNet models start from)
RESNETS: dict[str, tuple[Callable[..., nn.Module], object]] = {
    "resnet50_d8": (resnet50, ResNet50_Weights.IMAGENET1K_V1),
    "resnet101_d8": (resnet101, ResNet101_Weights.IMAGENET1K_V1),
}
# output stride → which of layer2–layer4 trade their stride for dilation
DILATED_STAGES = {8: [False, True, True], 16: [False, False, True]}
STEM = ("conv1", "bn1", "relu", "maxpool")
STAGES = ("layer1", "layer2", "layer3", "layer4")


class ResNetTrunk(BatchNormTrunk):
    """A torchvision ResNet without its pooling and classifier, dilated to ``output_stride``.

    Taps ``layer1`` … ``layer4`` (256, 512, 1024, 2048 channels), the outputs of the four
    stages; at output stride 8 their strides are 4, 8, 8, 8, at 16 they are 4, 8, 16, 16. Layer
    names are torchvision's, so an ImageNet state dict loads as it is.

    Args:
        arch: ``resnet50_d8`` or ``resnet101_d8``.
        output_stride: 8 (layer3 and layer4 dilated) or 16 (layer4 dilated).
        freeze_bn: keep every BatchNorm's statistics and affine parameters as they are (eval
            mode, no gradients): the usual choice when fine-tuning with small batches.
        bn_momentum: running-statistics momentum of the BatchNorms (None: torchvision's).
    """

    def __init__(
        self,
        arch: str = "resnet50_d8",
        output_stride: int = 8,
        freeze_bn: bool = False,
        bn_momentum: float | None = None,
    ) -> None:
        super().__init__(arch, freeze_bn=freeze_bn, bn_momentum=bn_momentum)
        if arch not in RESNETS:
            raise ValueError(f"backbone.arch must be one of {sorted(RESNETS)}, got {arch!r}")
        if output_stride not in DILATED_STAGES:
            raise ValueError(f"backbone.output_stride must be 8 or 16, got {output_stride}")
        build, self.imagenet_weights = RESNETS[arch]
        net = build(weights=None, replace_stride_with_dilation=DILATED_STAGES[output_stride])
        self.set_layers({name: getattr(net, name) for name in (*STEM, *STAGES)})
        stride = 4
        for index, stage in enumerate(STAGES):
            if index and not DILATED_STAGES[output_stride][index - 1]:
                stride *= 2
            channels = getattr(net, stage)[-1].conv3.out_channels
            self.add_tap(stage, stage, channels, stride)
        self.configure_batchnorm()

    def trunk_key(self, torchvision_key: str) -> str | None:
        """Our name of a torchvision ResNet state-dict key (the same), or None for the
        classifier, which the trunk does not have."""
        return None if torchvision_key.startswith("fc.") else torchvision_key

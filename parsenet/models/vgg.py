"""VGG16 trunks: the paper's reduced VGG16 at output stride 8, and the FCN-32s VGG16."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from parsenet.models.trunk import Trunk

# (stage name, number of 3×3 convolutions, output channels at full width)
VGG16_STAGES: tuple[tuple[str, int, int], ...] = (
    ("conv1", 2, 64),
    ("conv2", 2, 128),
    ("conv3", 3, 256),
    ("conv4", 3, 512),
    ("conv5", 3, 512),
)
# Layers whose output a head can tap (after their ReLU), in network order.
TAPPABLE = ("conv3_3", "conv4_3", "conv5_3", "fc7")


@dataclass(frozen=True)
class TrunkLayout:
    """What distinguishes the two trunks.

    Attributes:
        strided_pools: how many of pool1–pool5 halve the resolution (2×2/2, ceil mode); the
            others are 3×3/1/1, which keeps the resolution.
        conv5_dilation: dilation of conv5_1–conv5_3.
        fc6_kernel, fc6_dilation: fc6 as a convolution.
        fc_channels: output channels of fc6 and fc7 at full width.
    """

    strided_pools: int
    conv5_dilation: int
    fc6_kernel: int
    fc6_dilation: int
    fc_channels: int


TRUNKS: dict[str, TrunkLayout] = {
    # DeepLab-LargeFOV / ParseNet: pool4 and pool5 keep the resolution, conv5 dilation 2, fc6 a
    # 3×3 convolution with dilation 12 subsampled from VGG16's 7×7 fc6, 1024 channels.
    "reduced_vgg16": TrunkLayout(3, 2, 3, 12, 1024),
    # FCN-32s: VGG16 with fc6 as a 7×7 convolution and fc7 as a 1×1 convolution, 4096 channels.
    "vgg16_fcn32": TrunkLayout(5, 1, 7, 1, 4096),
}


def scaled_channels(channels: int, width_mult: float) -> int:
    """Channel count after applying the width multiplier (never below 1)."""
    return max(1, int(round(channels * width_mult)))


class VGGTrunk(Trunk):
    """VGG16 with fc6/fc7 as convolutions, in one of the layouts of :data:`TRUNKS`.

    ``reduced_vgg16`` (the paper's trunk, output stride 8): pool1–3 are 2×2/2 max pools in ceil
    mode (as Caffe), pool4 and pool5 are 3×3/1/1, conv5 uses dilation 2, fc6 is a 3×3
    convolution with dilation 12 and fc7 a 1×1 convolution, 1024 channels each.
    ``vgg16_fcn32`` (output stride 32): all five pools are 2×2/2 (ceil mode), fc6 is 7×7 with
    padding 3 and fc7 1×1, 4096 channels each. ReLU and dropout follow both fc layers. Layer
    names follow the Caffe models (``conv1_1`` … ``conv5_3``, ``fc6``, ``fc7``).

    Args:
        arch: a key of :data:`TRUNKS`.
        width_mult: scales every channel count (1.0 is the paper's network; smaller values give
            fast CPU runs and tests).
        dropout: dropout rate after fc6 and fc7.
    """

    weights_name = "torchvision's VGG16 ImageNet weights"

    def __init__(
        self, arch: str = "reduced_vgg16", width_mult: float = 1.0, dropout: float = 0.5
    ) -> None:
        super().__init__(arch, width_mult)
        if arch not in TRUNKS:
            raise ValueError(f"backbone.arch must be one of {sorted(TRUNKS)}, got {arch!r}")
        if not width_mult > 0:
            raise ValueError(f"backbone.width_mult must be positive, got {width_mult}")
        if not 0 <= dropout < 1:
            raise ValueError(f"backbone.dropout must be in [0, 1), got {dropout}")
        layout = TRUNKS[arch]
        # A tap is the output of the ReLU after its convolution (for fc7 the dropout after it).
        layers: dict[str, nn.Module] = {}
        in_channels, stride = 3, 1
        for stage_index, (stage, num_convs, channels) in enumerate(VGG16_STAGES, start=1):
            out_channels = scaled_channels(channels, width_mult)
            dilation = layout.conv5_dilation if stage == "conv5" else 1
            for conv_index in range(1, num_convs + 1):
                name = f"{stage}_{conv_index}"
                layers[name] = nn.Conv2d(
                    in_channels, out_channels, 3, padding=dilation, dilation=dilation
                )
                relu = f"relu{stage_index}_{conv_index}"
                layers[relu] = nn.ReLU(inplace=True)
                if name in TAPPABLE:
                    self.add_tap(name, relu, out_channels, stride)
                in_channels = out_channels
            if stage_index <= layout.strided_pools:
                layers[f"pool{stage_index}"] = nn.MaxPool2d(2, stride=2, ceil_mode=True)
                stride *= 2
            else:
                layers[f"pool{stage_index}"] = nn.MaxPool2d(3, stride=1, padding=1)
        fc_channels = scaled_channels(layout.fc_channels, width_mult)
        fc6_padding = layout.fc6_dilation * (layout.fc6_kernel - 1) // 2
        layers["fc6"] = nn.Conv2d(
            in_channels,
            fc_channels,
            layout.fc6_kernel,
            padding=fc6_padding,
            dilation=layout.fc6_dilation,
        )
        layers["relu6"] = nn.ReLU(inplace=True)
        layers["drop6"] = nn.Dropout(dropout)
        layers["fc7"] = nn.Conv2d(fc_channels, fc_channels, 1)
        layers["relu7"] = nn.ReLU(inplace=True)
        layers["drop7"] = nn.Dropout(dropout)
        self.set_layers(layers)
        self.add_tap("fc7", "drop7", fc_channels, stride)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random initialisation for training without ImageNet weights (He normal, zero bias)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def convolutions(self) -> dict[str, nn.Conv2d]:
        """The trunk's convolutions by Caffe name (``conv1_1`` … ``fc7``), in network order."""
        return {
            name: layer
            for name, layer in self.layers.named_children()
            if isinstance(layer, nn.Conv2d)
        }

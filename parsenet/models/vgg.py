"""The paper's reduced VGG16 trunk: a fully convolutional VGG16 at output stride 8."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

# (stage name, number of 3×3 convolutions, output channels at full width)
VGG16_STAGES: tuple[tuple[str, int, int], ...] = (
    ("conv1", 2, 64),
    ("conv2", 2, 128),
    ("conv3", 3, 256),
    ("conv4", 3, 512),
    ("conv5", 3, 512),
)
FC_CHANNELS = 1024


def scaled_channels(channels: int, width_mult: float) -> int:
    """Channel count after applying the width multiplier (never below 1)."""
    return max(1, int(round(channels * width_mult)))


class ReducedVGG16(nn.Module):
    """VGG16 with fc6/fc7 as convolutions, reduced to 1024 channels, at output stride 8.

    Layout of the ParseNet / DeepLab-LargeFOV trunk: pool1–3 are 2×2/2 max pools in ceil mode
    (as Caffe), pool4 and pool5 are 3×3/1/1, conv5 uses dilation 2, fc6 is a 3×3 convolution with
    dilation 12 and fc7 a 1×1 convolution; ReLU and dropout follow both fc layers. Layer names
    follow the Caffe model (``conv1_1`` … ``conv5_3``, ``fc6``, ``fc7``).

    Args:
        width_mult: scales every channel count (1.0 is the paper's network; smaller values give
            fast CPU runs and tests).
        dropout: dropout rate after fc6 and fc7.
    """

    def __init__(self, width_mult: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: dict[str, nn.Module] = {}
        in_channels = 3
        for stage_index, (stage, num_convs, channels) in enumerate(VGG16_STAGES, start=1):
            out_channels = scaled_channels(channels, width_mult)
            dilation = 2 if stage == "conv5" else 1
            for conv_index in range(1, num_convs + 1):
                layers[f"{stage}_{conv_index}"] = nn.Conv2d(
                    in_channels, out_channels, 3, padding=dilation, dilation=dilation
                )
                layers[f"relu{stage_index}_{conv_index}"] = nn.ReLU(inplace=True)
                in_channels = out_channels
            if stage_index <= 3:
                layers[f"pool{stage_index}"] = nn.MaxPool2d(2, stride=2, ceil_mode=True)
            else:
                layers[f"pool{stage_index}"] = nn.MaxPool2d(3, stride=1, padding=1)
        fc_channels = scaled_channels(FC_CHANNELS, width_mult)
        layers["fc6"] = nn.Conv2d(in_channels, fc_channels, 3, padding=12, dilation=12)
        layers["relu6"] = nn.ReLU(inplace=True)
        layers["drop6"] = nn.Dropout(dropout)
        layers["fc7"] = nn.Conv2d(fc_channels, fc_channels, 1)
        layers["relu7"] = nn.ReLU(inplace=True)
        layers["drop7"] = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(layers))
        self.out_channels = fc_channels
        self.output_stride = 8
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random initialisation for training without ImageNet weights (He normal, zero bias)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the fc7 features (after ReLU and dropout) at 1/8 of the input size (ceil)."""
        return self.layers(x)

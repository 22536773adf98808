"""What every trunk shares: a sequence of named layers, some of whose outputs are *taps* — named
feature maps with known channels and stride that a head can read."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn


class Trunk(nn.Module):
    """A feature extractor as one ``nn.Sequential`` of named layers (``self.layers``) with taps.

    Subclasses build ``self.layers`` and record each tap with :meth:`add_tap` in network order,
    so the last recorded tap is the deepest (:attr:`deepest_tap`, the one global context pools).

    Attributes:
        arch: the ``model.backbone.arch`` name.
        width_mult: channel multiplier the trunk was built with (1.0: the published network).
        tap_channels, tap_strides: channels and stride (input pixels per feature pixel) of every
            tap, in network order.
        tap_outputs: tap name → the layer of ``self.layers`` whose output it is.
        weights_name: what ``pretrained: imagenet`` loads into this trunk, for messages.
    """

    weights_name = "ImageNet weights"

    def __init__(self, arch: str, width_mult: float = 1.0) -> None:
        super().__init__()
        self.arch = arch
        self.width_mult = width_mult
        self.tap_channels: dict[str, int] = {}
        self.tap_strides: dict[str, int] = {}
        self.tap_outputs: dict[str, str] = {}
        self.layers = nn.Sequential()

    def set_layers(self, layers: OrderedDict[str, nn.Module] | dict[str, nn.Module]) -> None:
        """Make ``layers`` (name → module, in order) the trunk's body."""
        self.layers = nn.Sequential(OrderedDict(layers))

    def add_tap(self, name: str, output: str, channels: int, stride: int) -> None:
        """Record that tap ``name`` is the output of layer ``output``, with its channels and
        stride."""
        self.tap_outputs[name] = output
        self.tap_channels[name], self.tap_strides[name] = channels, stride

    @property
    def deepest_tap(self) -> str:
        """The last tap in network order (VGG's ``fc7``, ResNet's ``layer4``, MobileNet's
        ``high``)."""
        return next(reversed(self.tap_outputs))

    @property
    def out_channels(self) -> int:
        """The channels of the deepest tap."""
        return self.tap_channels[self.deepest_tap]

    @property
    def output_stride(self) -> int:
        """The stride of the deepest tap."""
        return self.tap_strides[self.deepest_tap]

    def features(self, x: torch.Tensor, taps: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Run the trunk and return the outputs of the layers in ``taps``, each at its own
        resolution (see ``tap_strides``). Layers after the deepest requested tap are skipped."""
        unknown = set(taps) - set(self.tap_outputs)
        if unknown:
            raise ValueError(
                f"cannot tap {sorted(unknown)}; choose among {tuple(self.tap_outputs)}"
            )
        wanted = {self.tap_outputs[name]: name for name in taps}
        outputs: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.named_children():
            if len(outputs) == len(wanted):
                break
            x = layer(x)
            if name in wanted:
                outputs[wanted[name]] = x
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The deepest tap's features."""
        return self.features(x, (self.deepest_tap,))[self.deepest_tap]


class BatchNormTrunk(Trunk):
    """A trunk built from a torchvision ImageNet classifier with BatchNorm layers.

    Subclasses set ``imagenet_weights`` (the torchvision weights enum entry that ``pretrained:
    imagenet`` loads) and map torchvision's state-dict keys to theirs with :meth:`trunk_key`.

    Args:
        arch: the ``model.backbone.arch`` name.
        width_mult: channel multiplier (1.0: the published network).
        freeze_bn: keep every BatchNorm's running statistics and affine parameters fixed (the
            layers stay in eval mode and their parameters get no gradient).
        bn_momentum: the BatchNorms' running-statistics momentum; None keeps torchvision's (0.1
            for ResNets, 0.01 for MobileNetV3, which lags far behind the weights of a short run
            from scratch: evaluation then sees stale statistics).
    """

    imagenet_weights: Any = None

    def __init__(
        self,
        arch: str,
        width_mult: float = 1.0,
        freeze_bn: bool = False,
        bn_momentum: float | None = None,
    ) -> None:
        super().__init__(arch, width_mult)
        if bn_momentum is not None and not 0 < bn_momentum <= 1:
            raise ValueError(f"backbone.bn_momentum must be in (0, 1], got {bn_momentum}")
        self.freeze_bn = freeze_bn
        self.bn_momentum = bn_momentum

    @property
    def weights_name(self) -> str:  # type: ignore[override]
        return f"torchvision's {self.imagenet_weights}"

    def batchnorms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """Every BatchNorm layer of the trunk."""
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def configure_batchnorm(self) -> None:
        """Apply ``bn_momentum``, and with ``freeze_bn`` no gradient for the BatchNorm
        parameters and eval mode from now on (see :meth:`train`). Call at the end of a
        subclass's constructor."""
        if self.bn_momentum is not None:
            for norm in self.batchnorms():
                norm.momentum = self.bn_momentum
        if self.freeze_bn:
            for norm in self.batchnorms():
                norm.requires_grad_(False)
            self.train(self.training)

    def train(self, mode: bool = True) -> BatchNormTrunk:
        """As :meth:`nn.Module.train`, but frozen BatchNorms stay in eval mode."""
        super().train(mode)
        if self.freeze_bn:
            for norm in self.batchnorms():
                norm.eval()
        return self

    def trunk_key(self, torchvision_key: str) -> str | None:
        """This trunk's ``layers`` key for a key of the torchvision model's state dict, or None
        for a part the trunk leaves out (the classifier)."""
        raise NotImplementedError

"""The interface every head offers the network around it (see :class:`SegmentationHead`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class SegmentationHead(nn.Module):
    """Tapped trunk features in, class scores at :attr:`output_stride` out.

    A head is built from the trunk's tap declarations (``tap_channels``, ``tap_strides``, in
    network order) and the number of classes. Subclasses set:

    Attributes:
        spatial_taps: the trunk taps whose maps the head reads at their own resolution.
        context_bins: pooling grids of ParseNet's global context (empty for other heads).
        output_stride: the stride of the scores (the finest tap the head reads).
        pooled_batchnorm: whether a BatchNorm normalises an image-pooled (1×1) vector, which
            cannot train on batches of one image.
    """

    spatial_taps: tuple[str, ...] = ()
    context_bins: tuple[int, ...] = ()
    output_stride: int = 1
    pooled_batchnorm: bool = False

    @property
    def trunk_taps(self) -> tuple[str, ...]:
        """The trunk taps this head reads."""
        return tuple(sorted(self.spatial_taps))

    def new_layers(self) -> tuple[nn.Module, ...]:
        """The head's layers that start from scratch (trained at the new-layer learning-rate
        multiplier): every module of the head that owns parameters."""
        return tuple(m for m in self.modules() if any(True for _ in m.parameters(recurse=False)))

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


def deepest(tap_channels: Mapping[str, int]) -> str:
    """The last tap in network order."""
    return next(reversed(tuple(tap_channels)))

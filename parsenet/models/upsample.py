"""Upsampling class scores to the input size: learnable bilinear deconvolution, or interpolation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLINGS = ("deconv", "bilinear")


def bilinear_kernel(size: int) -> torch.Tensor:
    """A size×size bilinear interpolation kernel (Caffe's ``bilinear_upsampling`` filler)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(taps, taps).float()


class DeconvUpsample(nn.Module):
    """Learnable per-class deconvolution (kernel 2s, stride s, pad s/2), bilinear init, then crop.

    For the paper's stride 8 this is Caffe's ``upscore`` (kernel 16, stride 8, pad 4). The output
    is s× the score map; with ceil-mode pooling that is at least the input size, and the top-left
    H×W crop aligns output pixel u with input pixel u (Caffe's crop offset 0).
    """

    def __init__(self, num_classes: int, stride: int = 8) -> None:
        super().__init__()
        kernel = 2 * stride
        self.deconv = nn.ConvTranspose2d(
            num_classes,
            num_classes,
            kernel,
            stride=stride,
            padding=stride // 2,
            groups=num_classes,
            bias=True,
        )
        with torch.no_grad():
            self.deconv.weight.copy_(bilinear_kernel(kernel).expand_as(self.deconv.weight))
            self.deconv.bias.zero_()

    def forward(self, scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        upsampled = self.deconv(scores)
        height, width = size
        if upsampled.shape[-2] < height or upsampled.shape[-1] < width:
            raise ValueError(f"upsampled scores {tuple(upsampled.shape[-2:])} smaller than {size}")
        return upsampled[..., :height, :width]


class BilinearUpsample(nn.Module):
    """Fixed bilinear interpolation of the scores to the input size."""

    def forward(self, scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


def build_upsample(kind: str, num_classes: int, stride: int) -> nn.Module:
    """``deconv`` (:class:`DeconvUpsample`) or ``bilinear`` (:class:`BilinearUpsample`)."""
    if kind not in UPSAMPLINGS:
        raise ValueError(f"upsample must be one of {UPSAMPLINGS}, got {kind!r}")
    return DeconvUpsample(num_classes, stride) if kind == "deconv" else BilinearUpsample()

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


class PhaseConvTranspose2d(nn.ConvTranspose2d):
    """ParseNet's per-class deconvolution (kernel 2s, stride s, padding s/2, one group per class),
    computed as an ordinary 3×3 convolution into the s² output phases and one reordering copy.

    Output pixel ``o = s·q + r`` (row phase ``r``) of a stride-s transposed convolution receives
    input pixels ``q - 1``, ``q`` or ``q + 1`` only, through kernel taps that depend on ``r`` alone:
    a 3×3 convolution over the zero-padded input with s² output channels per class (two of the
    three taps of each row and column are zero) gives every phase at once, and arranging the
    phases as pixels gives the transposed convolution's output, already cropped at the top left.
    The same arithmetic as :class:`~torch.nn.ConvTranspose2d` (tests/test_models.py compares
    outputs and gradients), but oneDNN's grouped transposed convolution is slow on CPUs, slower
    still in the backward pass and with channels-last scores, and the crop of the stride-s map
    cost a copy and a zero-filled gradient (docs/benchmarks.md). The parameters are the
    transposed convolution's (same names, shapes, checkpoints and Caffe weights).
    """

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__(
            channels, channels, 2 * stride, stride=stride, padding=stride // 2, groups=channels
        )
        if stride % 2:
            raise ValueError(f"the upsampling stride must be even, got {stride}")
        # For each output phase r and tap t (input pixel q + t - 1): the kernel row it reads, or
        # 2s (a zero row appended to the kernel) where that tap does not reach the phase.
        phases = torch.arange(stride).view(-1, 1)
        rows = phases + stride // 2 - stride * (torch.arange(3).view(1, -1) - 1)
        rows[(rows < 0) | (rows >= 2 * stride)] = 2 * stride
        self.register_buffer("tap_rows", rows, persistent=False)

    def phase_weight(self) -> torch.Tensor:
        """The (K·s²)×1×3×3 kernel of the phase convolution, gathered from the 2s×2s kernel."""
        stride = self.stride[0]
        padded = F.pad(self.weight[:, 0], (0, 1, 0, 1))  # K×(2s+1)×(2s+1), last row/col 0
        rows = self.tap_rows
        taps = padded[:, rows.view(stride, 3, 1, 1), rows.view(1, 1, stride, 3)]  # K×s×3×s×3
        return taps.permute(0, 1, 3, 2, 4).reshape(-1, 1, 3, 3)

    def forward(self, scores: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The transposed convolution of ``scores`` (N×K×H×W), cropped to its top-left
        ``size`` (default: the whole sH×sW output)."""
        stride = self.stride[0]
        batch, channels, height, width = scores.shape
        size = size or (stride * height, stride * width)
        if stride * height < size[0] or stride * width < size[1]:
            raise ValueError(
                f"upsampled scores {(stride * height, stride * width)} smaller than {size}"
            )
        bias = None if self.bias is None else self.bias.repeat_interleave(stride * stride)
        phases = F.conv2d(scores, self.phase_weight(), bias, padding=1, groups=channels)
        # N×(K·s·s)×H×W → N×K×(H·s)×(W·s): one copy, into NCHW whatever the layout of scores.
        pixels = phases.view(batch, channels, stride, stride, height, width)
        pixels = pixels.permute(0, 1, 4, 2, 5, 3).reshape(
            batch, channels, height * stride, width * stride
        )
        return pixels[..., : size[0], : size[1]]


class DeconvUpsample(nn.Module):
    """Learnable per-class deconvolution (kernel 2s, stride s, pad s/2), bilinear init, then crop.

    For the paper's stride 8 this is Caffe's ``upscore`` (kernel 16, stride 8, pad 4). The output
    is s× the score map; with ceil-mode pooling that is at least the input size, and the top-left
    H×W crop aligns output pixel u with input pixel u (Caffe's crop offset 0).
    """

    def __init__(self, num_classes: int, stride: int = 8) -> None:
        super().__init__()
        self.deconv = PhaseConvTranspose2d(num_classes, stride)
        with torch.no_grad():
            self.deconv.weight.copy_(bilinear_kernel(2 * stride).expand_as(self.deconv.weight))
            self.deconv.bias.zero_()

    def forward(self, scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.deconv(scores, size)


class BilinearUpsample(nn.Module):
    """Fixed bilinear interpolation of the scores to the input size."""

    def forward(self, scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


def build_upsample(kind: str, num_classes: int, stride: int) -> nn.Module:
    """``deconv`` (:class:`DeconvUpsample`) or ``bilinear`` (:class:`BilinearUpsample`)."""
    if kind not in UPSAMPLINGS:
        raise ValueError(f"upsample must be one of {UPSAMPLINGS}, got {kind!r}")
    return DeconvUpsample(num_classes, stride) if kind == "deconv" else BilinearUpsample()

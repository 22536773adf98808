"""ParseNet and the FCN baseline: the reduced VGG16 trunk, a score head, and upsampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from parsenet.models.l2norm import L2Norm
from parsenet.models.vgg import ReducedVGG16

FUSIONS = ("late", "early")
UPSAMPLINGS = ("deconv", "bilinear")


def caffe_xavier_(conv: nn.Conv2d) -> None:
    """Caffe's ``xavier`` filler: U(±sqrt(3 / fan_in)), bias 0 (PyTorch's uses fan_in+fan_out)."""
    fan_in = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    bound = math.sqrt(3.0 / fan_in)
    nn.init.uniform_(conv.weight, -bound, bound)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def score_conv(in_channels: int, num_classes: int) -> nn.Conv2d:
    """A 1×1 classifier initialised as the Caffe model's score layers."""
    conv = nn.Conv2d(in_channels, num_classes, 1)
    caffe_xavier_(conv)
    return conv


class ContextHead(nn.Module):
    """Turns trunk features into class scores, optionally with ParseNet's global context.

    Without context and normalisation this is the FCN classifier (one 1×1 convolution). With
    context, the features are average-pooled over the whole map ("pool6"), L2-normalised and
    scaled, passed through dropout and replicated over the map ("unpooled"). Late fusion (the
    released VOC model) scores local and context features with separate 1×1 classifiers and sums
    the scores; early fusion concatenates the two and scores them with one classifier.

    Args:
        in_channels: channels of the trunk features.
        num_classes: number of output classes.
        use_context: add the global context branch.
        normalize: L2-normalise each branch with a learned per-channel scale.
        fusion: ``late`` (sum of scores) or ``early`` (concatenate features).
        norm_scale: initial γ of every L2Norm (10 in the released model).
        context_dropout: dropout on the normalised context vector (0.3 in the released model).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        use_context: bool = True,
        normalize: bool = True,
        fusion: str = "late",
        norm_scale: float = 10.0,
        context_dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.use_context = use_context
        self.fusion = fusion if use_context else "late"
        self.local_norm = L2Norm(in_channels, norm_scale) if normalize else nn.Identity()
        if use_context:
            self.context_norm = L2Norm(in_channels, norm_scale) if normalize else nn.Identity()
            self.context_dropout = nn.Dropout(context_dropout)
        if self.fusion == "early":
            self.fused_score = score_conv(2 * in_channels, num_classes)
        else:
            self.local_score = score_conv(in_channels, num_classes)
            if use_context:
                self.context_score = score_conv(in_channels, num_classes)

    def global_context(self, features: torch.Tensor) -> torch.Tensor:
        """The normalised, scaled and dropped-out global average of ``features`` (N×C×1×1)."""
        pooled = features.mean(dim=(2, 3), keepdim=True)
        return self.context_dropout(self.context_norm(pooled))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        local = self.local_norm(features)
        if not self.use_context:
            return self.local_score(local)
        context = self.global_context(features)
        if self.fusion == "early":
            unpooled = context.expand(-1, -1, *features.shape[2:])
            return self.fused_score(torch.cat([local, unpooled], dim=1))
        return self.local_score(local) + self.context_score(context)


def bilinear_kernel(size: int) -> torch.Tensor:
    """A size×size bilinear interpolation kernel (Caffe's ``bilinear_upsampling`` filler)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(taps, taps).float()


class DeconvUpsample(nn.Module):
    """Learnable per-class deconvolution (kernel 16, stride 8, pad 4), bilinear init, then crop.

    The output is 8× the score map; with ceil-mode pooling that is at least the input size, and
    the top-left H×W crop aligns output pixel u with input pixel u (Caffe's crop offset 0).
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


class SegmentationNet(nn.Module):
    """Trunk → score head → upsampling to the input size: ParseNet, or FCN without context.

    ``forward`` takes an N×3×H×W normalised image batch and returns N×K×H×W class scores (logits)
    for any H and W.
    """

    def __init__(
        self,
        num_classes: int,
        width_mult: float = 1.0,
        dropout: float = 0.5,
        use_context: bool = True,
        normalize: bool = True,
        fusion: str = "late",
        norm_scale: float = 10.0,
        context_dropout: float = 0.3,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLINGS:
            raise ValueError(f"upsample must be one of {UPSAMPLINGS}, got {upsample!r}")
        self.num_classes = num_classes
        self.backbone = ReducedVGG16(width_mult=width_mult, dropout=dropout)
        self.head = ContextHead(
            self.backbone.out_channels,
            num_classes,
            use_context=use_context,
            normalize=normalize,
            fusion=fusion,
            norm_scale=norm_scale,
            context_dropout=context_dropout,
        )
        if upsample == "deconv":
            self.upsample: nn.Module = DeconvUpsample(num_classes, self.backbone.output_stride)
        else:
            self.upsample = BilinearUpsample()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = (images.shape[-2], images.shape[-1])
        return self.upsample(self.head(self.backbone(images)), size)

"""ParseNet's head: tapped layers, L2 normalisation, global (or pyramid) context, fusion."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from parsenet.models.head_base import SegmentationHead, deepest
from parsenet.models.l2norm import L2Norm

FUSIONS = ("late", "early")
CONTEXT_NORMS = ("l2", "batchnorm", "none")
CONTEXT_TAP = "pool6"
# γ initial values when none is given for a tap: 10 for fc7 and pool6 (the released model), 20 for
# conv4_3 (SSD's value) and conv3_3; the paper's values for conv3–5 were not published. The
# modern trunks follow the same rule: 10 for the deepest tap (layer4, high), 20 for shallower ones.
# The one place these live: configs/model/head/*.yaml leave model.head.scale_init unset and fall
# back to them.
DEFAULT_SCALE_INIT = {
    "conv3_3": 20.0, "conv4_3": 20.0, "conv5_3": 10.0, "fc7": 10.0,
    "layer1": 20.0, "layer2": 20.0, "layer3": 20.0, "layer4": 10.0,
    "low": 20.0, "high": 10.0,
    "pool6": 10.0,
}  # fmt: skip


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


def upsample_to(x: torch.Tensor, factor: int, size: torch.Size) -> torch.Tensor:
    """Bilinearly upsample a map by an integer ``factor`` and crop it to ``size``.

    A map at stride ``f·s`` becomes the map at stride ``s`` with pixel centres aligned (both
    place pixel y at ``stride·y + (stride − 1)/2`` of the input); ceil-mode pooling makes the
    upsampled map at least ``size``, so the top-left crop is exact.
    """
    if factor == 1:
        return x
    up = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    return up[..., : size[0], : size[1]]


def unpool(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Replicate pooled bins over a map of ``size`` (Caffe's ``UnPooling`` with ``REP``)."""
    if x.shape[-2:] == (1, 1):
        return x.expand(-1, -1, *size)
    return F.interpolate(x, size=tuple(size), mode="nearest")


def initial_scales(scale_init: Mapping[str, float] | float | None) -> dict[str, float]:
    """γ's initial value for every tap: :data:`DEFAULT_SCALE_INIT` updated with ``scale_init``
    (a mapping of tap name → γ), or one number for every tap, or the defaults for ``None``."""
    if scale_init is None:
        return dict(DEFAULT_SCALE_INIT)
    if isinstance(scale_init, Mapping):
        return {**DEFAULT_SCALE_INIT, **{tap: float(value) for tap, value in scale_init.items()}}
    return dict.fromkeys(DEFAULT_SCALE_INIT, float(scale_init))


class FusionHead(SegmentationHead):
    """Turns tapped trunk features into class scores at the finest tapped resolution.

    Each tap is one of the trunk's taps (VGG: ``conv3_3``, ``conv4_3``, ``conv5_3``, ``fc7``;
    ResNet: ``layer1`` … ``layer4``; MobileNetV3: ``low``, ``high``) or ``pool6``, the global
    context: the deepest tap (``fc7``, ``layer4``, ``high``) average-pooled over the whole map
    ("pool6_1x1"), or over a pyramid of b×b bins, normalised (``context_norm``), passed through
    dropout and replicated back over the map ("unpooled"). With ``normalize`` every tap gets its
    own :class:`L2Norm` (γ initialised from ``scale_init``; each pyramid level has its own). Late
    fusion (the released
    VOC model) scores each tap with its own 1×1 classifier and sums the scores; early fusion
    concatenates the normalised features and scores them with one classifier. Taps at a coarser
    resolution are bilinearly upsampled to the finest one with aligned pixel centres.

    The FCN classifier is ``taps=("fc7",), normalize=False``.

    Args:
        tap_channels: channels of every trunk tap, in network order (``Trunk.tap_channels``).
        tap_strides: stride of every trunk tap (``Trunk.tap_strides``).
        num_classes: number of output classes.
        taps: the layers the classifier sees, e.g. ``("fc7", "pool6")``; None: the deepest tap
            and ``pool6``.
        normalize: L2-normalise every tap with a learned scale.
        scale_init: initial γ per tap name, or one number for all; missing taps use
            :data:`DEFAULT_SCALE_INIT`.
        learn_scale: learn γ (Caffe's ``fix_scale: false``) or keep it fixed.
        channel_shared: one γ per tap instead of one per channel.
        context_bins: pooling grid sizes of ``pool6``: ``(1,)`` is global pooling (the paper),
            e.g. ``(1, 2, 3, 6)`` a pyramid.
        context_dropout: dropout on the normalised context (0.3 in the released model).
        fusion: ``late`` (sum of per-tap scores) or ``early`` (concatenate, one classifier).
        context_norm: how the pooled context is normalised: ``l2`` (ParseNet's L2Norm with γ,
            no batch statistics), ``batchnorm`` (what DeepLab's and PSPNet's pooling branches
            use; cannot train on one image per batch) or ``none``; None: ``l2`` with
            ``normalize``, else ``none``.
    """

    def __init__(
        self,
        tap_channels: Mapping[str, int],
        tap_strides: Mapping[str, int],
        num_classes: int,
        taps: Sequence[str] | None = None,
        normalize: bool = True,
        scale_init: Mapping[str, float] | float | None = None,
        learn_scale: bool = True,
        channel_shared: bool = False,
        context_bins: Sequence[int] = (1,),
        context_dropout: float = 0.3,
        fusion: str = "late",
        context_norm: str | None = None,
    ) -> None:
        super().__init__()
        taps = tuple(taps) if taps is not None else (deepest(tap_channels), CONTEXT_TAP)
        context_norm = context_norm or ("l2" if normalize else "none")
        self._check(taps, tap_channels, context_bins, context_dropout, fusion, context_norm)
        self.spatial_taps = tuple(tap for tap in taps if tap != CONTEXT_TAP)
        self.context_bins = tuple(context_bins) if CONTEXT_TAP in taps else ()
        self.fusion = fusion
        self.output_stride = min(tap_strides[tap] for tap in self.spatial_taps)
        self.factors = {tap: tap_strides[tap] // self.output_stride for tap in self.spatial_taps}
        self.context_source = deepest(tap_channels)
        self.context_norm = context_norm
        self.pooled_batchnorm = context_norm == "batchnorm" and 1 in self.context_bins
        scales = initial_scales(scale_init)

        # Branch keys follow the Caffe names: a tap's name, or pool6_<b>x<b> per context level.
        channels = {tap: tap_channels[tap] for tap in self.spatial_taps}
        scale_of = {tap: scales[tap] for tap in self.spatial_taps}
        for bins in self.context_bins:
            key = self.context_key(bins)
            channels[key], scale_of[key] = tap_channels[self.context_source], scales[CONTEXT_TAP]
        kinds = {key: "l2" if normalize else "none" for key in self.spatial_taps}
        kinds.update({self.context_key(bins): context_norm for bins in self.context_bins})

        def norm(key: str, count: int) -> nn.Module:
            if kinds[key] == "batchnorm":
                return nn.BatchNorm2d(count)
            if kinds[key] == "none":
                return nn.Identity()
            return L2Norm(
                count, scale_of[key], channel_shared=channel_shared, learn_scale=learn_scale
            )

        self.norms = nn.ModuleDict({key: norm(key, count) for key, count in channels.items()})
        self.context_dropout = nn.Dropout(context_dropout)
        if fusion == "early":
            self.scores = nn.ModuleDict({"fused": score_conv(sum(channels.values()), num_classes)})
        else:
            self.scores = nn.ModuleDict(
                {key: score_conv(count, num_classes) for key, count in channels.items()}
            )

    @staticmethod
    def _check(taps, tap_channels, context_bins, context_dropout, fusion, context_norm) -> None:
        known = (*tap_channels, CONTEXT_TAP)
        unknown = [tap for tap in taps if tap not in known]
        if unknown or len(set(taps)) != len(taps):
            raise ValueError(f"head.taps must be distinct names among {known}, got {list(taps)}")
        if not any(tap != CONTEXT_TAP for tap in taps):
            raise ValueError(f"head.taps needs a spatial layer among {tuple(tap_channels)}")
        if not context_bins or any(not isinstance(b, int) or b < 1 for b in context_bins):
            raise ValueError(f"head.context_bins must be whole numbers ≥ 1, got {context_bins}")
        if not 0 <= context_dropout < 1:
            raise ValueError(f"head.context_dropout must be in [0, 1), got {context_dropout}")
        if fusion not in FUSIONS:
            raise ValueError(f"head.fusion must be one of {FUSIONS}, got {fusion!r}")
        if context_norm not in CONTEXT_NORMS:
            raise ValueError(
                f"head.context_norm must be one of {CONTEXT_NORMS}, got {context_norm!r}"
            )

    @staticmethod
    def context_key(bins: int) -> str:
        """The branch name of one context level (``pool6_1x1`` for global pooling)."""
        return f"{CONTEXT_TAP}_{bins}x{bins}"

    def new_layers(self) -> tuple[nn.Module, ...]:
        """The 1×1 score convolutions (and a context BatchNorm): the layers that start from
        scratch; the L2Norm scales are a role of their own."""
        batchnorms = [m for m in self.norms.values() if isinstance(m, nn.BatchNorm2d)]
        return (*self.scores.values(), *batchnorms)

    @property
    def trunk_taps(self) -> tuple[str, ...]:
        """The trunk layers this head reads."""
        needed = set(self.spatial_taps) | ({self.context_source} if self.context_bins else set())
        return tuple(sorted(needed))

    def context(self, features: torch.Tensor, bins: int) -> torch.Tensor:
        """One context level: pooled to bins×bins, normalised and scaled, dropped out."""
        pooled = F.adaptive_avg_pool2d(features, bins)
        return self.context_dropout(self.norms[self.context_key(bins)](pooled))

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class scores at ``output_stride`` from the trunk's tapped ``features``."""
        size = features[min(self.spatial_taps, key=self.factors.get)].shape[-2:]
        local = {tap: self.norms[tap](features[tap]) for tap in self.spatial_taps}
        contexts = {
            self.context_key(b): self.context(features[self.context_source], b)
            for b in self.context_bins
        }
        if self.fusion == "early":
            parts = [upsample_to(x, self.factors[tap], size) for tap, x in local.items()]
            parts += [unpool(x, size) for x in contexts.values()]
            return self.scores["fused"](torch.cat(parts, dim=1))
        total = None
        for tap, x in local.items():
            scores = upsample_to(self.scores[tap](x), self.factors[tap], size)
            total = scores if total is None else total + scores
        for key, x in contexts.items():
            total = total + unpool(self.scores[key](x), size)
        return total

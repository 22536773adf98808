"""How a model's scores for one image are formed: whole image, sliding window, or multi-scale
with flipping — always at the image's own size, so predictions are scored against the label as
it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from parsenet.config import is_finite_number, shipped
from parsenet.errors import ConfigError

MODES = ("whole", "slide", "msflip")
KEY = "inference"  # the config node of every command, for messages
DEFAULTS = shipped(KEY, "whole")  # configs/inference/whole.yaml: the one owner of the defaults


@dataclass(frozen=True)
class InferenceMode:
    """An evaluation mode and its settings; the defaults are ``configs/inference/whole.yaml``'s.

    Attributes:
        mode: ``whole`` (the image at once), ``slide`` (``crop``×``crop`` windows every
            ``stride`` pixels, overlapping logits averaged) or ``msflip`` (the image resized by
            each of ``scales``, also flipped if ``flip``; softmax probabilities averaged).
        crop, stride: window size and step of ``slide``.
        scales, flip: resize factors and horizontal flipping of ``msflip``.
    """

    mode: str = DEFAULTS["mode"]
    crop: int = DEFAULTS["slide"]["crop"]
    stride: int = DEFAULTS["slide"]["stride"]
    scales: tuple[float, ...] = field(default=tuple(DEFAULTS["msflip"]["scales"]))
    flip: bool = DEFAULTS["msflip"]["flip"]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> InferenceMode:
        """Build from an ``inference`` config node (``configs/inference/``): ``mode`` plus its
        ``slide``/``msflip`` settings; a value out of range is a :class:`ConfigError` naming
        its key."""
        mode = cfg["mode"]
        if mode not in MODES:
            raise ConfigError(f"{KEY}.mode={mode!r} is not one of {MODES}")
        slide, msflip = cfg["slide"], cfg["msflip"]
        if mode == "slide" and not 0 < slide["stride"] <= slide["crop"]:
            raise ConfigError(
                f"{KEY}.slide.stride={slide['stride']} must be in "
                f"1…{KEY}.slide.crop={slide['crop']}"
            )
        if mode == "msflip" and not are_scales(msflip["scales"]):
            raise ConfigError(
                f"{KEY}.msflip.scales={msflip['scales']} must be finite numbers > 0, e.g. [0.5,1.0]"
            )
        return cls(
            mode, slide["crop"], slide["stride"], tuple(msflip["scales"]), bool(msflip["flip"])
        )

    def describe(self) -> dict[str, Any]:
        """The mode and the settings that matter for it (written beside every score)."""
        if self.mode == "slide":
            return {"mode": "slide", "crop": self.crop, "stride": self.stride}
        if self.mode == "msflip":
            return {"mode": "msflip", "scales": list(self.scales), "flip": self.flip}
        return {"mode": "whole"}

    def scores(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """N×K×H×W scores for N×3×H×W images: logits (``whole``, ``slide``) or averaged
        probabilities (``msflip``); either way the argmax is the prediction."""
        if self.mode == "slide":
            return slide_logits(model, images, self.crop, self.stride)
        if self.mode == "msflip":
            return multiscale_probabilities(model, images, self.scales, self.flip)
        return model(images)


WHOLE_IMAGE = InferenceMode("whole")


def are_scales(scales: Any) -> bool:
    """True for a non-empty list of finite resize factors above 0."""
    return (
        isinstance(scales, list | tuple)
        and bool(scales)
        and all(is_finite_number(scale) and scale > 0 for scale in scales)
    )


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of windows that cover ``length`` (the last one flush with the end)."""
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop, stride))
    return [*starts, length - crop]


def slide_logits(model: nn.Module, images: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """Logits from overlapping crop×crop windows, summed and divided by how many windows saw
    each pixel (an image smaller than the window is one window of its own size)."""
    height, width = images.shape[-2:]
    total: torch.Tensor | None = None
    count = torch.zeros((1, 1, height, width), device=images.device)
    for top in window_starts(height, crop, stride):
        for left in window_starts(width, crop, stride):
            window = images[..., top : top + crop, left : left + crop]
            logits = model(window)
            if total is None:
                total = images.new_zeros((images.shape[0], logits.shape[1], height, width))
            total[..., top : top + crop, left : left + crop] += logits
            count[..., top : top + crop, left : left + crop] += 1
    return total / count


def multiscale_probabilities(
    model: nn.Module, images: torch.Tensor, scales: Sequence[float], flip: bool
) -> torch.Tensor:
    """Softmax probabilities averaged over resized (and flipped) copies, at the input size."""
    size = images.shape[-2:]
    total: torch.Tensor | None = None
    views = 0
    for scale in scales:
        scaled_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        scaled = images
        if scaled_size != tuple(size):
            scaled = F.interpolate(images, scaled_size, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            view = scaled.flip(-1) if flipped else scaled
            probabilities = model(view).softmax(dim=1)
            if flipped:
                probabilities = probabilities.flip(-1)
            if scaled_size != tuple(size):
                probabilities = F.interpolate(
                    probabilities, size, mode="bilinear", align_corners=False
                )
            total = probabilities if total is None else total + probabilities
            views += 1
    return total / views

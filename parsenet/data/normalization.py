"""Input normalisation conventions, chosen by the weights a model starts from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from parsenet.errors import ConfigError


@dataclass(frozen=True)
class InputNormalization:
    """How RGB uint8 pixels become network input.

    ``x = (pixel[channel_order] * pixel_scale - mean) / std``, with ``mean`` and ``std`` given in
    ``channel_order``.
    """

    name: str
    channel_order: str
    pixel_scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def fill_rgb(self) -> tuple[float, float, float]:
        """The RGB 0–255 pixel that normalises to zero (used to pad images)."""
        mean_rgb = self.mean if self.channel_order == "RGB" else self.mean[::-1]
        return tuple(value / self.pixel_scale for value in mean_rgb)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Turn an H×W×3 RGB uint8 array into a normalised 3×H×W float32 tensor."""
        pixels = image if self.channel_order == "RGB" else image[..., ::-1]
        array = pixels.astype(np.float32) * self.pixel_scale
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


NORMALIZATIONS: dict[str, InputNormalization] = {
    # torchvision ImageNet weights: RGB in [0, 1], ImageNet mean and std.
    "torchvision": InputNormalization(
        "torchvision", "RGB", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ),
    # Caffe VGG16 weights (and the released ParseNet model): BGR 0–255 minus the mean pixel.
    "caffe": InputNormalization(
        "caffe", "BGR", 1.0, (104.00699, 116.66877, 122.67892), (1.0, 1.0, 1.0)
    ),
}


def get_normalization(name: str) -> InputNormalization:
    """Look up a convention by name (``torchvision`` or ``caffe``)."""
    if name not in NORMALIZATIONS:
        raise ConfigError(f"model.input_norm={name!r} is not one of {sorted(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]

"""Colouring labels with a dataset palette and drawing prediction overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_COLOUR = (224, 224, 192)  # the VOC devkit's colour for the void band


def colorize(
    label: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255
) -> np.ndarray:
    """Turn an H×W array of class indices into an H×W×3 uint8 image (ignore → light grey)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    table[ignore_index] = IGNORE_COLOUR
    return table[label.astype(np.uint8)]


def overlay(image: np.ndarray, coloured: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend a coloured label map over an RGB image.

    Black label pixels (the VOC palette's background) are left unblended, so the image stays
    visible around the objects.
    """
    tinted = coloured.any(axis=-1, keepdims=True)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * coloured.astype(np.float32)
    return np.where(tinted, blended.round(), image).astype(np.uint8)


def comparison_panel(
    image: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray,
    palette: Sequence[Sequence[int]],
    ignore_index: int = 255,
    alpha: float = 0.5,
) -> np.ndarray:
    """Image | label overlay | prediction overlay, side by side, with a 4-pixel white gap."""
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    truth = overlay(image, colorize(label, palette, ignore_index), alpha)
    predicted = overlay(image, colorize(prediction, palette, ignore_index), alpha)
    return np.concatenate([image, gap, truth, gap, predicted], axis=1)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 array as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path

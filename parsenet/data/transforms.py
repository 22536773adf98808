"""Albumentations pipelines for training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from parsenet.data.info import IGNORE_INDEX
from parsenet.data.normalization import InputNormalization


class PairPipeline:
    """Geometric augmentation of (image, label) with albumentations, then normalisation.

    Returns ``{"image": 3×H×W float32 tensor, "label": H×W int64 tensor}``. Labels are only ever
    resized with nearest neighbour and padded with the ignore index.
    """

    def __init__(self, augment: A.Compose | None, normalization: InputNormalization) -> None:
        self.augment = augment
        self.normalization = normalization

    def reseed(self, seed: int) -> None:
        """Restart the augmentation's random streams from ``seed`` (the training loader does it
        for every sample, so a sample's augmentation does not depend on workers or resumes)."""
        if self.augment is not None:
            self.augment.set_random_seed(seed)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> dict:
        if self.augment is not None:
            out = self.augment(image=image, mask=label)
            image, label = out["image"], out["mask"]
        return {
            "image": self.normalization(image),
            "label": torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)),
        }


def train_transform(
    normalization: InputNormalization,
    crop_size: int | None,
    scale_range: Sequence[float] = (0.5, 2.0),
    flip: bool = True,
) -> PairPipeline:
    """Random scale in ``scale_range``, pad (image with the mean, label with 255) to
    ``crop_size``, random ``crop_size`` square crop, random horizontal flip, normalise.

    ``crop_size=None`` keeps whole images (batches then need images of one size, or batch 1).
    """
    low, high = scale_range
    steps: list[A.BasicTransform] = []
    if (low, high) != (1.0, 1.0):
        steps.append(A.RandomScale(scale_limit=(low - 1.0, high - 1.0), p=1.0))
    if crop_size is not None:
        steps += [
            A.PadIfNeeded(
                min_height=crop_size,
                min_width=crop_size,
                border_mode=cv2.BORDER_CONSTANT,
                fill=normalization.fill_rgb(),
                fill_mask=IGNORE_INDEX,
            ),
            A.RandomCrop(height=crop_size, width=crop_size),
        ]
    if flip:
        steps.append(A.HorizontalFlip(p=0.5))
    return PairPipeline(A.Compose(steps), normalization)


def eval_transform(normalization: InputNormalization) -> PairPipeline:
    """No resizing: predictions and metrics stay at the label's original size."""
    return PairPipeline(None, normalization)

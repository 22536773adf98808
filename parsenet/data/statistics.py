"""Label statistics of a split: pixels and images per class, and the class weights built on them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from parsenet.data.base import SegmentationDataset
from parsenet.errors import DataError


@dataclass
class LabelStatistics:
    """What the labels of one split hold.

    Attributes:
        pixels: labelled pixels per class index; index ``num_classes`` counts ignored pixels.
        images: images that contain each class.
        image_pixels: per class, the labelled pixels of all the images that contain it (the
            denominator of median-frequency balancing).
        problems: one message per pair that could not be read.
    """

    pixels: np.ndarray
    images: np.ndarray
    image_pixels: np.ndarray
    problems: list[str] = field(default_factory=list)


def class_histogram(dataset: SegmentationDataset, index: int) -> np.ndarray:
    """Pixels per value 0–255 of one checked pair's label (raises DataError if the pair is bad)."""
    _, label = dataset.load_pair(index)
    return np.bincount(label.ravel(), minlength=256)


def label_statistics(
    dataset: SegmentationDataset, num_classes: int, ignore_index: int, workers: int = 4
) -> LabelStatistics:
    """Read every label of ``dataset`` (unaugmented) and count its classes; bad pairs are
    collected in ``problems``, not raised."""
    stats = LabelStatistics(
        pixels=np.zeros(num_classes + 1, dtype=np.int64),
        images=np.zeros(num_classes, dtype=np.int64),
        image_pixels=np.zeros(num_classes, dtype=np.int64),
    )

    def count(index: int) -> np.ndarray | str:
        try:
            return class_histogram(dataset, index)
        except DataError as error:
            return str(error)

    with ThreadPoolExecutor(max(workers, 1)) as pool:
        for result in pool.map(count, range(len(dataset))):
            if isinstance(result, str):
                stats.problems.append(result)
                continue
            per_class = result[:num_classes]
            present = per_class > 0
            stats.pixels[:num_classes] += per_class
            stats.pixels[num_classes] += result[ignore_index]
            stats.images += present
            stats.image_pixels[present] += per_class.sum()
    return stats


def median_frequency_weights(stats: LabelStatistics) -> np.ndarray:
    """Median-frequency balancing (Eigen & Fergus 2015, as in SegNet): a class's frequency is
    its pixels over the pixels of the images that contain it, and its weight is the median of
    those frequencies over its own. Classes that never occur get weight 1."""
    present = stats.image_pixels > 0
    if not present.any():
        raise DataError("no labelled pixel in the training split: class weights cannot be computed")
    frequency = np.zeros(len(stats.images))
    frequency[present] = stats.pixels[: len(stats.images)][present] / stats.image_pixels[present]
    weights = np.ones(len(stats.images))
    weights[present] = np.median(frequency[present]) / frequency[present]
    return weights

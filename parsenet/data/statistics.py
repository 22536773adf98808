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


def class_histogram(
    dataset: SegmentationDataset, index: int, read_images: bool = True
) -> np.ndarray:
    """Pixels per value 0–255 of one checked label — with its image decoded and checked too
    unless ``read_images`` is False (raises DataError for a bad pair)."""
    label = dataset.load_pair(index)[1] if read_images else dataset.load_label(index)
    return np.bincount(label.ravel(), minlength=256)


def label_statistics(
    dataset: SegmentationDataset,
    num_classes: int,
    ignore_index: int,
    workers: int = 4,
    read_images: bool = True,
) -> LabelStatistics:
    """Read every label of ``dataset`` (unaugmented; its image too, unless ``read_images`` is
    False) and count its classes; bad pairs are collected in ``problems``, not raised."""
    stats = LabelStatistics(
        pixels=np.zeros(num_classes + 1, dtype=np.int64),
        images=np.zeros(num_classes, dtype=np.int64),
        image_pixels=np.zeros(num_classes, dtype=np.int64),
    )

    def count(index: int) -> np.ndarray | str:
        try:
            return class_histogram(dataset, index, read_images)
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
        raise DataError("no labelled pixel: median-frequency weights cannot be computed")
    class_pixels = stats.pixels[:-1]  # the last entry counts ignored pixels
    frequency = np.zeros(len(class_pixels))
    frequency[present] = class_pixels[present] / stats.image_pixels[present]
    weights = np.ones(len(class_pixels))
    weights[present] = np.median(frequency[present]) / frequency[present]
    return weights

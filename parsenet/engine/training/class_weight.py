"""``loss.class_weight`` as numbers: checked as the user typed it, or computed from the training
labels (``median_frequency``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from parsenet.data.base import SegmentationDataset
from parsenet.data.info import DatasetInfo
from parsenet.data.statistics import label_statistics, median_frequency_weights
from parsenet.errors import ConfigError, DataError

log = logging.getLogger(__name__)
MEDIAN_FREQUENCY = "median_frequency"


def checked_class_weight(setting: Any, num_classes: int) -> list[float] | str | None:
    """``loss.class_weight`` checked before anything is built: ``None``, ``median_frequency``,
    or ``num_classes`` finite non-negative numbers, not all zero (else a one-line ConfigError)."""
    if setting is None or setting == MEDIAN_FREQUENCY:
        return setting
    fix = f"give {num_classes} non-negative numbers (one per class), {MEDIAN_FREQUENCY} or null"
    if isinstance(setting, str) or not isinstance(setting, Sequence):
        raise ConfigError(f"loss.class_weight={setting!r}: {fix}")
    try:
        weights = [float(value) for value in setting]
    except (TypeError, ValueError):
        raise ConfigError(f"loss.class_weight={list(setting)!r}: {fix}") from None
    if len(weights) != num_classes:
        raise ConfigError(f"loss.class_weight has {len(weights)} values: {fix}")
    bad = [value for value in weights if not math.isfinite(value) or value < 0]
    if bad:
        raise ConfigError(f"loss.class_weight has {bad[0]}: {fix}")
    if not any(weights):
        raise ConfigError(f"loss.class_weight is all zero, so nothing would be learnt: {fix}")
    return weights


def resolved_class_weight(
    setting: list[float] | str | None, train_set: SegmentationDataset, info: DatasetInfo
) -> list[float] | None:
    """The weights the loss gets for a checked setting: ``median_frequency`` is computed from
    the training split's labels (read once, unaugmented) and logged with the class names."""
    if setting != MEDIAN_FREQUENCY:
        return setting
    stats = label_statistics(train_set, info.num_classes, info.ignore_index, read_images=False)
    if stats.problems and train_set.on_bad_sample == "raise":
        raise DataError(stats.problems[0])
    if not stats.image_pixels.any():
        raise ConfigError(
            f"loss.class_weight={MEDIAN_FREQUENCY}: the training split has no labelled pixel; "
            "give one weight per class or null"
        )
    weights = [float(weight) for weight in median_frequency_weights(stats)]
    named = ", ".join(f"{n} {w:.3g}" for n, w in zip(info.class_names, weights, strict=True))
    log.info("class weights (%s): %s", MEDIAN_FREQUENCY, named)
    return weights

"""Scoring prediction PNGs made elsewhere against a dataset split, the VOC devkit's way."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from parsenet.data.base import SegmentationDataset, read_label
from parsenet.engine.runtime.distributed import DistContext
from parsenet.engine.scoring.split import sum_over_processes
from parsenet.errors import DataError
from parsenet.image_scores import WORST_IMAGES
from parsenet.metrics import SplitScores


def score_prediction_folder(
    dataset: SegmentationDataset,
    folder: str | Path,
    indices: range | None = None,
    context: DistContext | None = None,
    progress: bool = False,
    keep: int = WORST_IMAGES,
) -> SplitScores:
    """Count ``folder/<id>.png`` (class indices, palette or greyscale PNG) against the labels:
    the confusion matrix, the boundary IoU, the per-image context statistics and records (the
    ``keep`` worst images with their pictures, in the main process).

    Every image of the split must have its prediction, of the label's size, with values among
    the classes; anything else is a :class:`DataError` naming the file. Under torchrun each
    process scores ``indices`` (its share) and the counts are summed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"predictions={folder} is not a folder of <id>.png prediction files")
    info = dataset.info
    scores = SplitScores(info.num_classes, info.ignore_index, keep)
    share = range(len(dataset)) if indices is None else indices  # an empty share scores nothing
    for index in tqdm(share, desc="score", disable=not progress or None):
        path = folder / f"{dataset.sample_name(index)}.png"
        if not path.is_file():
            raise DataError(f"prediction {path} is missing (one <id>.png per image of the split)")
        prediction = read_label(path)
        label = dataset.load_label(index)
        if prediction.shape != label.shape:
            raise DataError(
                f"prediction {path} is {prediction.shape[1]}×{prediction.shape[0]} but the label "
                f"is {label.shape[1]}×{label.shape[0]}; predict at the label's size"
            )
        if int(prediction.max()) >= info.num_classes:
            raise DataError(
                f"prediction {path} holds class {int(prediction.max())}, outside the "
                f"{info.num_classes} classes of {info.name}"
            )
        scores.update(
            torch.from_numpy(prediction.astype("int64")),
            torch.from_numpy(label),
            [dataset.sample_name(index)],
            [index],
        )
    scores = sum_over_processes(scores, context)
    if context is None or context.is_main:
        scores.images.attach_images(dataset.load_image)
    return scores

"""CamVid as released with SegNet: list files of image/label pairs, 11 classes + void (11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parsenet.data.base import (
    PairTransform,
    SegmentationDataset,
    check_unique_ids,
    read_split_lines,
)
from parsenet.data.info import IGNORE_INDEX, DatasetInfo
from parsenet.errors import DataError

CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "signsymbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
CAMVID_PALETTE = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
CAMVID_INFO = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_PALETTE)
CAMVID_VOID = 11


def void_to_ignore_map(void: int = CAMVID_VOID) -> np.ndarray:
    """Lookup table that keeps class indices and turns the void value into the ignore index."""
    table = np.arange(256, dtype=np.uint8)
    table[void] = IGNORE_INDEX
    return table


def camvid_pair(root: Path, list_file: Path, line: str) -> tuple[Path, Path]:
    """The (image, label) paths of one ``IMAGE_PATH LABEL_PATH`` line, under ``root``."""
    fields = line.split()
    if len(fields) != 2:
        raise DataError(f"{list_file}: line {line!r} is not 'IMAGE_PATH LABEL_PATH'")
    image, label = (root / Path(field).parent.name / Path(field).name for field in fields)
    return image, label


def camvid_dataset(
    root: str | Path,
    split: str,
    transform: PairTransform | None = None,
    on_bad_sample: str = "raise",
) -> SegmentationDataset:
    """Read ``root/<split>.txt`` whose lines are ``IMAGE_PATH LABEL_PATH``.

    The release writes absolute paths under its own prefix (``/SegNet/CamVid/``); only the last
    two components (folder and file name) are kept and resolved under ``root``; an image listed
    on two lines is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data.root={root} does not exist; set it to the CamVid folder of the SegNet release "
            "(the one holding train.txt, train/ and trainannot/)"
        )
    list_file = root / f"{split}.txt"
    lines = read_split_lines(list_file)
    pairs = [camvid_pair(root, list_file, line) for _, line in lines]
    images = [image.relative_to(root).as_posix() for image, _ in pairs]
    check_unique_ids(list_file, zip([number for number, _ in lines], images, strict=True))
    return SegmentationDataset(
        pairs, CAMVID_INFO, transform, label_map=void_to_ignore_map(), on_bad_sample=on_bad_sample
    )

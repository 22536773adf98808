"""Datasets in the plain folder layout: ``images/`` + ``masks/`` + one list file per split.

This is the layout ``parsenet-data prepare`` writes for SiftFlow and PASCAL-Context (labels
already mapped to ``0 … K−1`` with 255 ignored) and the one users give their own data in
(``data=folder``, with the label space in a small YAML file)::

    root/
      images/<id>.jpg      RGB images (the suffix is ``data.image_suffix``)
      masks/<id>.png       class indices: palette (P), greyscale (L) or 16-bit PNGs; 255 = ignore
      train.txt, val.txt   one id per line, each id once (UTF-8, a byte-order mark is fine)
      classes.yaml         data=folder only: class names (+ optional palette, ignore index)
"""

from __future__ import annotations

from pathlib import Path

import yaml

from parsenet.data.base import PairTransform, SegmentationDataset, read_split_file
from parsenet.data.info import IGNORE_INDEX, DatasetInfo, voc_palette
from parsenet.errors import DataError

SIFTFLOW_CLASSES = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole",
    "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight",
    "sun", "tree", "window",
)  # fmt: skip
# The 59 most frequent PASCAL-Context classes (FCN / ParseNet protocol), alphabetical.
CONTEXT59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip


def _info(name: str, classes: tuple[str, ...]) -> DatasetInfo:
    return DatasetInfo(name, classes, voc_palette(len(classes)))


SIFTFLOW_INFO = _info("siftflow", SIFTFLOW_CLASSES)
# 59 classes with everything else ignored, or 60 with "background" as class 0.
CONTEXT59_INFO = _info("context59", CONTEXT59_CLASSES)
CONTEXT60_INFO = _info("context60", ("background", *CONTEXT59_CLASSES))


def read_classes_file(path: str | Path) -> DatasetInfo:
    """The label space of a user's dataset from a YAML file::

    name: roads                  # optional (default: the file's folder name)
    classes: [background, road, car]
    palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]   # optional (default: VOC colours)
    ignore_index: 255            # optional
    """
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as error:
        raise DataError(
            f"cannot read the class file {path} ({error.strerror}); set data.classes to a YAML "
            "file with 'classes: [name, …]'"
        ) from None
    except yaml.YAMLError as error:
        raise DataError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(content, dict) or not content.get("classes"):
        raise DataError(f"{path}: expected a mapping with 'classes: [name, …]'")
    names = tuple(str(name) for name in content["classes"])
    if len(set(names)) != len(names):
        raise DataError(f"{path}: 'classes' lists a name twice")
    palette = content.get("palette") or voc_palette(len(names))
    if len(palette) != len(names) or any(
        len(colour) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour)
        for colour in palette
    ):
        raise DataError(
            f"{path}: 'palette' needs one [R, G, B] (0–255) per class ({len(names)} classes)"
        )
    if len(names) > 255:
        raise DataError(f"{path}: at most 255 classes fit 8-bit label PNGs")
    ignore_index = content.get("ignore_index", IGNORE_INDEX)
    if not isinstance(ignore_index, int) or not len(names) <= ignore_index <= 255:
        raise DataError(
            f"{path}: 'ignore_index' must be a label value {len(names)}–255 (not a class index)"
        )
    name = str(content.get("name") or path.parent.name)
    return DatasetInfo(name, names, tuple(tuple(c) for c in palette), ignore_index)


def folder_dataset(
    root: str | Path,
    split: str,
    info: DatasetInfo,
    transform: PairTransform | None = None,
    image_suffix: str = ".jpg",
    on_bad_sample: str = "raise",
) -> SegmentationDataset:
    """Read a dataset in the folder layout described in this module's docstring.

    Args:
        root: the folder holding ``images/``, ``masks/`` and the list files.
        split: list file name without ``.txt``.
        info: the label space.
        transform: applied to each decoded pair.
        image_suffix: file suffix of the images (``.jpg``, ``.png``, …).
        on_bad_sample: ``raise`` or ``skip`` (see :class:`SegmentationDataset`).
    """
    base = Path(root)
    if not (base / "images").is_dir() or not (base / "masks").is_dir():
        raise DataError(
            f"data.root={root}: expected images/ and masks/ folders there (see data/README.md "
            f"for how to prepare {info.name})"
        )
    ids = read_split_file(base / f"{split}.txt")
    pairs = [(base / "images" / f"{i}{image_suffix}", base / "masks" / f"{i}.png") for i in ids]
    return SegmentationDataset(pairs, info, transform, on_bad_sample=on_bad_sample)

"""PASCAL-Context in the 59- and 60-class forms of the FCN protocol (4,998 train / 5,105 val).

Images come from VOC 2010, labels from the release's ``trainval/<id>.mat`` (``LabelMap``, values
indexing ``labels.txt``'s 459 classes). The 59 most frequent classes keep their indices; in the
60-class form every other pixel is class 0 (background), in the 59-class form it is ignored
(255). Splits are VOC 2010's ``ImageSets/Main/{train,val}.txt``. Both forms are written in the
folder layout, ``ROOT/context59`` and ``ROOT/context60`` (images hard-linked, not copied twice).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from parsenet.data.folder import CONTEXT59_CLASSES
from parsenet.data.info import IGNORE_INDEX
from parsenet.data.prepare.archive import find_one
from parsenet.data.prepare.common import (
    Preparer,
    add_pair,
    integer_map,
    label_lookup,
    read_ids,
    write_splits,
)
from parsenet.data.prepare.download import Source
from parsenet.errors import DataError

VOC2010 = Source(
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
    "md5:da459979d0c395079b5c75ee67908abb",
)
CONTEXT_LABELS = Source("https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz")
CONTEXT_SIZES = {"train": 4998, "val": 5105}
LABELS_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.+?)\s*$")


def normalise_name(name: str) -> str:
    """Class names compared as the FCN code does: without spaces, lower case."""
    return name.replace(" ", "").lower()


def read_context_classes(path: Path) -> dict[str, int]:
    """``labels.txt`` (``<index>: <name>`` per line) as normalised name → raw index."""
    classes = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        match = LABELS_LINE.match(line)
        if match:
            classes[normalise_name(match.group(2))] = int(match.group(1))
    if not classes:
        raise DataError(f"{path} lists no classes; expected lines like '1: accordion'")
    return classes


def context_lookups(classes: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Tables from raw ``LabelMap`` values to the 59-class (others → 255) and 60-class
    (others → 0 = background) indices."""
    missing = [name for name in CONTEXT59_CLASSES if normalise_name(name) not in classes]
    if missing:
        raise DataError(f"labels.txt has no class {', '.join(missing)}; is it the 459-class list?")
    raw = [classes[normalise_name(name)] for name in CONTEXT59_CLASSES]
    size = max(classes.values()) + 1
    table59 = label_lookup([(value, k) for k, value in enumerate(raw)], size, IGNORE_INDEX)
    table60 = label_lookup([(value, k + 1) for k, value in enumerate(raw)], size, 0)
    return table59, table60


def read_label_map(path: Path, size: int) -> np.ndarray:
    """The raw ``LabelMap`` of a ``trainval/<id>.mat``."""
    try:
        label = scipy.io.loadmat(path)["LabelMap"]
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path} is not a PASCAL-Context label (LabelMap): {error}") from None
    return integer_map(label, path, "LabelMap", size)


def convert_context(
    releases: list[Path], trees: list[Path], root: Path, allow_partial: bool
) -> None:
    """Write the 59- and 60-class trees (``trees``) from VOC 2010 and the Context labels."""
    voc = find_one(releases[0], "**/VOC2010", "VOC2010 folder")
    mats = find_one(releases[1], "**/trainval", "trainval folder of label .mat files")
    tables = context_lookups(
        read_context_classes(find_one(releases[1], "**/labels.txt", "labels.txt"))
    )
    labelled = {path.stem for path in mats.glob("*.mat")}
    splits = {
        split: [i for i in read_ids(voc / "ImageSets" / "Main" / f"{split}.txt") if i in labelled]
        for split in CONTEXT_SIZES
    }
    ids = sorted(set().union(*splits.values()))
    for image_id in tqdm(ids, desc="Context labels", disable=None):
        raw = read_label_map(mats / f"{image_id}.mat", len(tables[0]))
        for tree, table in zip(trees, tables, strict=True):
            add_pair(tree, voc / "JPEGImages" / f"{image_id}.jpg", table[raw])
    for tree in trees:
        write_splits(tree, splits)


CONTEXT_PREPARER = Preparer(
    name="PASCAL-Context",
    archives=(VOC2010, CONTEXT_LABELS),
    targets=(Path("context59"), Path("context60")),
    convert=convert_context,
    sizes=CONTEXT_SIZES,
    config="context59",
    config_root="context59",
)

"""SiftFlow (Liu et al.; 33 semantic classes, 2,688 images of 256×256) in the folder layout.

The release's ``SemanticLabels/…/<id>.mat`` hold ``S``: 0 = unlabeled, 1–33 = the classes.
They become ``masks/<id>.png`` with 0–32 and 255 for unlabeled (as the FCN repository's loader,
which subtracts one). ``TestSet1.txt`` names the 200 test images, the other 2,488 are train.
"""

from __future__ import annotations

from pathlib import Path, PureWindowsPath

import numpy as np
import scipy.io
from tqdm import tqdm

from parsenet.data.folder import SIFTFLOW_CLASSES
from parsenet.data.info import IGNORE_INDEX
from parsenet.data.prepare.archive import find_one
from parsenet.data.prepare.common import (
    Preparer,
    add_pair,
    integer_map,
    label_lookup,
    write_splits,
)
from parsenet.data.prepare.download import Source
from parsenet.errors import DataError

SIFTFLOW = Source("http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip")
SIFTFLOW_SIZES = {"train": 2488, "test": 200}
# Raw 0 (unlabeled) → ignore, raw k → k − 1.
SIFTFLOW_LOOKUP = label_lookup(
    [(raw, raw - 1) for raw in range(1, len(SIFTFLOW_CLASSES) + 1)],
    len(SIFTFLOW_CLASSES) + 1,
    IGNORE_INDEX,
)


def read_test_ids(path: Path) -> set[str]:
    """Image ids named in ``TestSet1.txt`` (paths with either slash, with or without suffix)."""
    return {
        PureWindowsPath(line.strip()).stem
        for line in path.read_text(encoding="utf-8-sig").splitlines()
        if line.strip()
    }


def read_siftflow_label(path: Path) -> np.ndarray:
    """Class indices 0–32 (255 = unlabeled) from a ``SemanticLabels`` ``.mat`` (``S``)."""
    try:
        raw = scipy.io.loadmat(path)["S"]
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path} is not a SiftFlow label (S): {error}") from None
    return SIFTFLOW_LOOKUP[integer_map(raw, path, "S", len(SIFTFLOW_LOOKUP))]


def convert_siftflow(
    releases: list[Path], trees: list[Path], root: Path, allow_partial: bool
) -> None:
    """Write ``images/``, ``masks/``, ``train.txt`` and ``test.txt`` into ``trees[0]``."""
    release, tree = releases[0], trees[0]
    images = {path.stem: path for path in release.glob("**/Images/**/*.jpg")}
    labels = {path.stem: path for path in release.glob("**/SemanticLabels/**/*.mat")}
    test = read_test_ids(find_one(release, "**/TestSet1.txt", "TestSet1.txt"))
    unknown = sorted(test - images.keys())
    if unknown:
        raise DataError(f"TestSet1.txt names {unknown[0]}, which has no image in the release")
    for image_id in tqdm(sorted(images), desc="SiftFlow labels", disable=None):
        if image_id not in labels:
            raise DataError(f"the release has no SemanticLabels .mat for {image_id}")
        add_pair(tree, images[image_id], read_siftflow_label(labels[image_id]))
    write_splits(tree, {"train": sorted(images.keys() - test), "test": sorted(test)})


SIFTFLOW_PREPARER = Preparer(
    name="SiftFlow",
    archives=(SIFTFLOW,),
    targets=(Path("siftflow"),),
    convert=convert_siftflow,
    sizes=SIFTFLOW_SIZES,
    config="siftflow",
    config_root="siftflow",
)

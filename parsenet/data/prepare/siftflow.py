"""SiftFlow (Liu et al.; 33 semantic classes, 2,688 images of 256×256) in the folder layout.

The release's ``SemanticLabels/…/<id>.mat`` hold ``S``: 0 = unlabeled, 1–33 = the classes.
They become ``masks/<id>.png`` with 0–32 and 255 for unlabeled (as the FCN repository's loader,
which subtracts one). ``TestSet1.txt`` names the 200 test images, the other 2,488 are train.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path, PureWindowsPath

import numpy as np
import scipy.io
from tqdm import tqdm

from parsenet.data.folder import SIFTFLOW_CLASSES
from parsenet.data.info import IGNORE_INDEX, VOC_COLOURS
from parsenet.data.prepare.archive import extract, find_one
from parsenet.data.prepare.common import (
    check_count,
    integer_map,
    label_lookup,
    write_list,
)
from parsenet.data.prepare.download import Source, fetch
from parsenet.errors import DataError
from parsenet.fileio import staged_folder as staged
from parsenet.visualize import save_label_png

log = logging.getLogger(__name__)

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
        PureWindowsPath(line.strip()).stem for line in path.read_text().splitlines() if line.strip()
    }


def read_siftflow_label(path: Path) -> np.ndarray:
    """Class indices 0–32 (255 = unlabeled) from a ``SemanticLabels`` ``.mat`` (``S``)."""
    try:
        raw = scipy.io.loadmat(path)["S"]
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path} is not a SiftFlow label (S): {error}") from None
    return SIFTFLOW_LOOKUP[integer_map(raw, path, "S", len(SIFTFLOW_LOOKUP))]


def prepare_siftflow(root: Path, downloads: Path, mirror: str | None, allow_partial: bool) -> Path:
    """Write ``root/siftflow`` (images, masks, train.txt, test.txt); returns it."""
    target = root / "siftflow"
    if target.is_dir():
        log.info("%s exists; nothing to do (delete it to convert again)", target)
        return target
    unpacked = root / ".siftflow-unpack"
    with staged(unpacked) as scratch:
        extract(fetch(SIFTFLOW, downloads, mirror), scratch)
    try:
        images = {path.stem: path for path in unpacked.glob("**/Images/**/*.jpg")}
        labels = {path.stem: path for path in unpacked.glob("**/SemanticLabels/**/*.mat")}
        test = read_test_ids(find_one(unpacked, "**/TestSet1.txt", "TestSet1.txt"))
        unknown = sorted(test - images.keys())
        if unknown:
            raise DataError(f"TestSet1.txt names {unknown[0]}, which has no image in the release")
        splits = {"train": sorted(images.keys() - test), "test": sorted(test)}
        for split, size in SIFTFLOW_SIZES.items():
            check_count(f"SiftFlow {split}", len(splits[split]), size, allow_partial)
        with staged(target) as scratch:
            (scratch / "images").mkdir()
            (scratch / "masks").mkdir()
            for image_id in tqdm(sorted(images), desc="SiftFlow labels", disable=None):
                if image_id not in labels:
                    raise DataError(f"the release has no SemanticLabels .mat for {image_id}")
                save_label_png(
                    read_siftflow_label(labels[image_id]),
                    VOC_COLOURS,
                    scratch / "masks" / f"{image_id}.png",
                )
                shutil.copy2(images[image_id], scratch / "images" / f"{image_id}.jpg")
            for split, ids in splits.items():
                write_list(scratch / f"{split}.txt", ids)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
    return target

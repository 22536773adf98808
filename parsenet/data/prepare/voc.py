"""PASCAL VOC 2012 and the SBD labels ("train_aug", the paper's 10,582 training images).

``prepare voc`` unpacks the official archive into ``ROOT/VOCdevkit/VOC2012``. ``prepare sbd``
adds, beside it, ``SegmentationClassAug/`` (the official palette PNGs for VOC-labelled ids,
SBD's ``cls/*.mat`` ``GTcls.Segmentation`` converted to palette PNGs for the rest) and the lists
``train_aug.txt`` (VOC train ∪ SBD train ∪ SBD val − VOC val) and ``sbd_only.txt`` (SBD ids
without a VOC segmentation label).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from parsenet.data.info import VOC_COLOURS
from parsenet.data.prepare.archive import find_one
from parsenet.data.prepare.common import (
    Preparer,
    check_count,
    integer_map,
    link_or_copy,
    read_ids,
    take_folder,
    write_list,
)
from parsenet.data.prepare.download import Source
from parsenet.data.voc import VOC_SUBDIR
from parsenet.errors import DataError
from parsenet.visualize import save_label_png

log = logging.getLogger(__name__)

VOC2012 = Source(
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    "md5:6cd6e144f989b92b3379bac3b3de84fd",
)
SBD = Source(
    "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
    "md5:82b4d87ceb2ed10f6038a1cba92111cb",
)
VOC_SIZES = {"train": 1464, "val": 1449}
SBD_SIZES = {"train": 8498, "val": 2857}
TRAIN_AUG_SIZE = 10582
SEGMENTATION_LISTS = Path("ImageSets") / "Segmentation"


def segmentation_lists(root: Path) -> Path:
    """``VOC2012/ImageSets/Segmentation`` of the VOC tree prepared under ``root`` (or a clear
    error)."""
    lists = root / VOC_SUBDIR / SEGMENTATION_LISTS
    if not (lists / "train.txt").is_file():
        raise DataError(
            f"{root / VOC_SUBDIR} is not a prepared VOC 2012 tree (no ImageSets/Segmentation/"
            f"train.txt); run `parsenet-data prepare voc --root {root}` first"
        )
    return lists


def train_aug_ids(
    voc_train: list[str], voc_val: list[str], sbd_train: list[str], sbd_val: list[str]
) -> list[str]:
    """VOC train ∪ SBD train ∪ SBD val − VOC val, sorted (10,582 ids for the official lists)."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def read_sbd_label(path: Path) -> np.ndarray:
    """Class indices from an SBD ``cls/<id>.mat`` (``GTcls.Segmentation``; 0 = background)."""
    try:
        content = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        label = np.asarray(content["GTcls"].Segmentation)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise DataError(f"{path} is not an SBD class label (GTcls.Segmentation): {error}") from None
    return integer_map(label, path, "GTcls.Segmentation", 21).astype(np.uint8)


def convert_sbd(releases: list[Path], trees: list[Path], root: Path, allow_partial: bool) -> None:
    """Write ``SegmentationClassAug/`` into ``trees[0]``, add SBD images missing from
    ``JPEGImages/`` and write ``train_aug.txt`` and ``sbd_only.txt`` beside VOC's lists.

    The release's split sizes (``train_aug`` too) are checked before anything is converted, as
    the lists are written outside the scratch folder."""
    voc, lists = root / VOC_SUBDIR, segmentation_lists(root)
    dataset = find_one(releases[0], "**/cls", "SBD cls folder").parent
    voc_ids = {split: read_ids(lists / f"{split}.txt") for split in VOC_SIZES}
    sbd_ids = {split: read_ids(dataset / f"{split}.txt") for split in SBD_SIZES}
    for split, size in SBD_SIZES.items():
        check_count(f"SBD {split}", len(sbd_ids[split]), size, allow_partial)
    train_aug = train_aug_ids(voc_ids["train"], voc_ids["val"], sbd_ids["train"], sbd_ids["val"])
    check_count("train_aug", len(train_aug), TRAIN_AUG_SIZE, allow_partial)
    voc_labelled = set(voc_ids["train"]) | set(voc_ids["val"])
    ids = sorted(set(train_aug) | set(voc_ids["val"]))
    for image_id in tqdm(ids, desc="SBD labels", disable=None):
        if image_id in voc_labelled:
            link_or_copy(voc / "SegmentationClass" / f"{image_id}.png", trees[0])
            continue
        label = read_sbd_label(dataset / "cls" / f"{image_id}.mat")
        save_label_png(label, VOC_COLOURS, trees[0] / f"{image_id}.png")
        image = voc / "JPEGImages" / f"{image_id}.jpg"
        if not image.is_file():
            link_or_copy(dataset / "img" / f"{image_id}.jpg", image)
    write_list(lists / "train_aug.txt", train_aug)
    sbd_only = sorted((set(sbd_ids["train"]) | set(sbd_ids["val"])) - voc_labelled)
    write_list(lists / "sbd_only.txt", sbd_only)
    log.info("train_aug: %d ids; SBD ids without a VOC label: %d", len(train_aug), len(sbd_only))


VOC_PREPARER = Preparer(
    name="VOC 2012",
    archives=(VOC2012,),
    targets=(VOC_SUBDIR,),
    convert=take_folder("**/VOC2012", "VOC2012 folder"),
    sizes=VOC_SIZES,
    config="voc",
    config_root="",
    lists=lambda tree: tree / SEGMENTATION_LISTS,
)
SBD_PREPARER = Preparer(
    name="SBD",
    archives=(SBD,),
    targets=(VOC_SUBDIR / "SegmentationClassAug",),
    convert=convert_sbd,
    sizes={"train_aug": TRAIN_AUG_SIZE},
    config="voc_aug",
    config_root="",
    lists=lambda tree: tree.parent / SEGMENTATION_LISTS,
    needs=segmentation_lists,
)

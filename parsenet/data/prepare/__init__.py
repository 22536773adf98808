"""``parsenet-data prepare NAME``: download, check, unpack and convert each public dataset.

Every converter takes ``(root, downloads, mirror, allow_partial)``, writes its dataset under
``root`` in the layout its ``configs/data/*.yaml`` reads, and asserts the published split sizes
(``allow_partial`` accepts a subset). Output appears only when complete.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from parsenet.data.prepare.camvid import prepare_camvid
from parsenet.data.prepare.context import prepare_context
from parsenet.data.prepare.siftflow import prepare_siftflow
from parsenet.data.prepare.voc import prepare_sbd, prepare_voc

Preparer = Callable[[Path, Path, "str | None", bool], Path]

PREPARERS: dict[str, Preparer] = {
    "voc": prepare_voc,
    "sbd": prepare_sbd,
    "context": prepare_context,
    "siftflow": prepare_siftflow,
    "camvid": prepare_camvid,
}
# The configs/data/ name that reads each prepared dataset, and its root under --root.
PREPARED_AS: dict[str, tuple[str, str]] = {
    "voc": ("voc", ""),
    "sbd": ("voc_aug", ""),
    "context": ("context59", "context59"),
    "siftflow": ("siftflow", "siftflow"),
    "camvid": ("camvid", "camvid"),
}

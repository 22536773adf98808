"""``parsenet-data prepare NAME``: download, check, unpack and convert each public dataset.

Every dataset is a :class:`~parsenet.data.prepare.common.Preparer` run by
:func:`~parsenet.data.prepare.common.prepare`: it is written under the data root in the layout
its ``configs/data/*.yaml`` reads, its published split sizes are asserted (``allow_partial``
accepts a subset), and it appears only when complete.
"""

from __future__ import annotations

from parsenet.data.prepare.camvid import CAMVID_PREPARER
from parsenet.data.prepare.common import Preparer, prepare
from parsenet.data.prepare.context import CONTEXT_PREPARER
from parsenet.data.prepare.siftflow import SIFTFLOW_PREPARER
from parsenet.data.prepare.voc import SBD_PREPARER, VOC_PREPARER

__all__ = ["PREPARERS", "Preparer", "prepare"]

PREPARERS: dict[str, Preparer] = {
    "voc": VOC_PREPARER,
    "sbd": SBD_PREPARER,
    "context": CONTEXT_PREPARER,
    "siftflow": SIFTFLOW_PREPARER,
    "camvid": CAMVID_PREPARER,
}

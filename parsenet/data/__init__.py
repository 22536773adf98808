"""Datasets by name, built from a ``data`` config node (see ``configs/data/*.yaml``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from parsenet.data.base import PairTransform, SegmentationDataset
from parsenet.data.camvid import CAMVID_INFO, camvid_dataset
from parsenet.data.folder import CONTEXT59_INFO, CONTEXT60_INFO, SIFTFLOW_INFO, folder_dataset
from parsenet.data.info import DatasetInfo
from parsenet.data.synthetic import SYNTHETIC_INFO, ensure_synthetic
from parsenet.data.voc import VOC_INFO, voc_dataset
from parsenet.errors import ConfigError

DATASET_INFOS: dict[str, DatasetInfo] = {
    "voc": VOC_INFO,
    "camvid": CAMVID_INFO,
    "synthetic": SYNTHETIC_INFO,
    "siftflow": SIFTFLOW_INFO,
    "context59": CONTEXT59_INFO,
    "context60": CONTEXT60_INFO,
}


def _voc(cfg: Mapping[str, Any], split: str, transform: PairTransform | None):
    return voc_dataset(
        cfg["root"], split, transform=transform, label_dir=cfg.get("label_dir", "SegmentationClass")
    )


def _synthetic(cfg: Mapping[str, Any], split: str, transform: PairTransform | None):
    root = ensure_synthetic(
        cfg["root"],
        num_train=cfg["num_train"],
        num_val=cfg["num_val"],
        height=cfg["height"],
        width=cfg["width"],
        seed=cfg["seed"],
    )
    return voc_dataset(root, split, info=SYNTHETIC_INFO, transform=transform)


def _camvid(cfg: Mapping[str, Any], split: str, transform: PairTransform | None):
    return camvid_dataset(cfg["root"], split, transform=transform)


def _folder(cfg: Mapping[str, Any], split: str, transform: PairTransform | None):
    return folder_dataset(
        cfg["root"],
        split,
        DATASET_INFOS[cfg["name"]],
        transform=transform,
        image_suffix=cfg.get("image_suffix", ".jpg"),
    )


DATASET_BUILDERS: dict[str, Callable[..., SegmentationDataset]] = {
    "voc": _voc,
    "camvid": _camvid,
    "synthetic": _synthetic,
    "siftflow": _folder,
    "context59": _folder,
    "context60": _folder,
}


def dataset_info(name: str) -> DatasetInfo:
    """Class names, palette and ignore index of a dataset by name."""
    if name not in DATASET_INFOS:
        raise ConfigError(f"data.name={name!r} is not one of {sorted(DATASET_INFOS)}")
    return DATASET_INFOS[name]


def build_dataset(
    cfg: Mapping[str, Any], split: str, transform: PairTransform | None = None
) -> SegmentationDataset:
    """Build the ``split`` of the dataset that a ``data`` config node describes."""
    dataset_info(cfg["name"])
    return DATASET_BUILDERS[cfg["name"]](cfg, split, transform)


__all__ = ["DatasetInfo", "SegmentationDataset", "build_dataset", "dataset_info"]

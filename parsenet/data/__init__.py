"""Datasets by name, built from a ``data`` config node (see ``configs/data/*.yaml``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from parsenet.data.base import PairTransform, SegmentationDataset
from parsenet.data.camvid import CAMVID_INFO, camvid_dataset
from parsenet.data.folder import (
    CONTEXT59_INFO,
    CONTEXT60_INFO,
    SIFTFLOW_INFO,
    folder_dataset,
    read_classes_file,
)
from parsenet.data.info import DatasetInfo
from parsenet.data.synthetic import SYNTHETIC_INFO, ensure_synthetic
from parsenet.data.voc import VOC_INFO, voc_dataset
from parsenet.errors import ConfigError

# Datasets with a fixed label space; ``folder`` reads its own from ``data.classes``.
DATASET_INFOS: dict[str, DatasetInfo] = {
    "voc": VOC_INFO,
    "camvid": CAMVID_INFO,
    "synthetic": SYNTHETIC_INFO,
    "siftflow": SIFTFLOW_INFO,
    "context59": CONTEXT59_INFO,
    "context60": CONTEXT60_INFO,
}
DATASET_NAMES = (*DATASET_INFOS, "folder")


def _on_bad_sample(cfg: Mapping[str, Any]) -> str:
    return cfg.get("on_bad_sample") or "raise"


def _voc(cfg: Mapping[str, Any], split: str, transform: PairTransform | None):
    return voc_dataset(
        cfg["root"],
        split,
        transform=transform,
        label_dir=cfg.get("label_dir") or "SegmentationClass",
        on_bad_sample=_on_bad_sample(cfg),
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
    return voc_dataset(
        root, split, info=SYNTHETIC_INFO, transform=transform, on_bad_sample=_on_bad_sample(cfg)
    )


def _camvid(cfg: Mapping[str, Any], split: str, transform: PairTransform | None):
    return camvid_dataset(
        cfg["root"], split, transform=transform, on_bad_sample=_on_bad_sample(cfg)
    )


def _folder(cfg: Mapping[str, Any], split: str, transform: PairTransform | None):
    return folder_dataset(
        cfg["root"],
        split,
        dataset_info(cfg),
        transform=transform,
        image_suffix=cfg.get("image_suffix") or ".jpg",
        on_bad_sample=_on_bad_sample(cfg),
    )


DATASET_BUILDERS: dict[str, Callable[..., SegmentationDataset]] = {
    "voc": _voc,
    "camvid": _camvid,
    "synthetic": _synthetic,
    "siftflow": _folder,
    "context59": _folder,
    "context60": _folder,
    "folder": _folder,
}


def dataset_info(cfg: Mapping[str, Any]) -> DatasetInfo:
    """Class names, palette and ignore index of the dataset a ``data`` config node describes
    (``{"name": "voc"}`` is enough for a built-in one)."""
    name = cfg["name"]
    if name == "folder":
        if not cfg.get("classes"):
            raise ConfigError("data=folder needs data.classes=PATH (a YAML file of class names)")
        return read_classes_file(cfg["classes"])
    if name not in DATASET_INFOS:
        raise ConfigError(f"data.name={name!r} is not one of {', '.join(DATASET_NAMES)}")
    return DATASET_INFOS[name]


def build_dataset(
    cfg: Mapping[str, Any], split: str, transform: PairTransform | None = None
) -> SegmentationDataset:
    """Build the ``split`` of the dataset that a ``data`` config node describes."""
    if cfg["name"] not in DATASET_BUILDERS:
        raise ConfigError(f"data.name={cfg['name']!r} is not one of {', '.join(DATASET_NAMES)}")
    return DATASET_BUILDERS[cfg["name"]](cfg, split, transform)


__all__ = ["DATASET_NAMES", "DatasetInfo", "SegmentationDataset", "build_dataset", "dataset_info"]

"""Datasets by name, built from a ``data`` config node (see ``configs/data/*.yaml``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

Builder = Callable[[Mapping[str, Any], str, PairTransform | None], SegmentationDataset]


@dataclass(frozen=True)
class DatasetEntry:
    """One ``data.name``: its label space and how a split of it is built.

    Attributes:
        info: the fixed label space, or ``None`` for a dataset that reads its own from
            ``data.classes`` (``folder``).
        build: ``build(cfg, split, transform)``, the ``split`` of the dataset ``cfg`` describes.
    """

    info: DatasetInfo | None
    build: Builder


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


DATASET_ENTRIES: dict[str, DatasetEntry] = {
    "voc": DatasetEntry(VOC_INFO, _voc),
    "camvid": DatasetEntry(CAMVID_INFO, _camvid),
    "synthetic": DatasetEntry(SYNTHETIC_INFO, _synthetic),
    "siftflow": DatasetEntry(SIFTFLOW_INFO, _folder),
    "context59": DatasetEntry(CONTEXT59_INFO, _folder),
    "context60": DatasetEntry(CONTEXT60_INFO, _folder),
    "folder": DatasetEntry(None, _folder),
}
DATASET_NAMES = tuple(DATASET_ENTRIES)


def _entry(name: str) -> DatasetEntry:
    """The entry of ``data.name``; a :class:`ConfigError` naming the known ones otherwise."""
    if name not in DATASET_ENTRIES:
        raise ConfigError(f"data.name={name!r} is not one of {', '.join(DATASET_NAMES)}")
    return DATASET_ENTRIES[name]


def dataset_info(cfg: Mapping[str, Any]) -> DatasetInfo:
    """Class names, palette and ignore index of the dataset a ``data`` config node describes
    (``{"name": "voc"}`` is enough for a built-in one)."""
    info = _entry(cfg["name"]).info
    if info is not None:
        return info
    if not cfg.get("classes"):
        raise ConfigError("data=folder needs data.classes=PATH (a YAML file of class names)")
    return read_classes_file(cfg["classes"])


def build_dataset(
    cfg: Mapping[str, Any], split: str, transform: PairTransform | None = None
) -> SegmentationDataset:
    """Build the ``split`` of the dataset that a ``data`` config node describes."""
    return _entry(cfg["name"]).build(cfg, split, transform)


__all__ = ["DATASET_NAMES", "DatasetInfo", "SegmentationDataset", "build_dataset", "dataset_info"]

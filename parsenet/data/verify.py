"""``parsenet-data verify``: read every pair of a dataset and report what is wrong with it.

Each pair is decoded as training would decode it (image and label exist and decode, sizes
match, label values are classes or the ignore index). The report gives the count per split, the
class frequencies and every bad file, so one run finds all problems instead of the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parsenet.data import build_dataset, dataset_info
from parsenet.data.info import DatasetInfo
from parsenet.data.statistics import label_statistics
from parsenet.errors import DataError


@dataclass
class SplitReport:
    """What verifying one split found.

    Attributes:
        split: the split's name.
        count: pairs listed.
        problems: one message per bad pair (or a problem with the split itself).
        pixels: labelled pixels per class index (index ``num_classes`` counts ignored pixels).
        images: images that contain each class.
    """

    split: str
    count: int = 0
    problems: list[str] = field(default_factory=list)
    pixels: np.ndarray | None = None
    images: np.ndarray | None = None


def verify_split(
    data_cfg: Mapping[str, Any], split: str, info: DatasetInfo, workers: int = 4
) -> SplitReport:
    """Check every pair of ``split``; problems are collected, not raised."""
    report = SplitReport(split)
    try:
        dataset = build_dataset({**data_cfg, "on_bad_sample": "skip"}, split)
    except DataError as error:
        report.problems.append(str(error))
        return report
    report.count = len(dataset)
    stats = label_statistics(dataset, info.num_classes, info.ignore_index, workers)
    report.pixels, report.images, report.problems = stats.pixels, stats.images, stats.problems
    return report


def verify_dataset(
    data_cfg: Mapping[str, Any], splits: list[str], workers: int = 4
) -> list[SplitReport]:
    """Verify each of ``splits`` of the dataset a ``data`` config node describes."""
    info = dataset_info(data_cfg)
    return [verify_split(data_cfg, split, info, workers) for split in splits]


def format_report(info: DatasetInfo, root: str, reports: list[SplitReport]) -> str:
    """Counts per split, the class-frequency table and the bad files, as console text."""
    lines = [f"{info.name} at {root}", "", f"{'split':<12}{'pairs':>8}{'bad':>8}"]
    lines += [f"{r.split:<12}{r.count:>8}{len(r.problems):>8}" for r in reports]
    counted = [r for r in reports if r.pixels is not None and r.pixels.sum()]
    if counted:
        width = max(len(name) for name in (*info.class_names, "ignored")) + 2
        header = "".join(f"{r.split + ' %px':>14}{'images':>8}" for r in counted)
        lines += ["", "class frequency (share of pixels, images containing the class)"]
        lines.append(f"{'class':<{width}}{header}")
        for index, name in enumerate((*info.class_names, "ignored")):
            cells = ""
            for r in counted:
                share = 100 * r.pixels[index] / r.pixels.sum()
                images = f"{r.images[index]}" if index < info.num_classes else ""
                cells += f"{share:>14.2f}{images:>8}"
            lines.append(f"{name:<{width}}{cells}")
        absent = [
            name for index, name in enumerate(info.class_names)
            if all(r.images[index] == 0 for r in counted)
        ]  # fmt: skip
        if absent:
            lines.append(f"classes that never occur: {', '.join(absent)}")
    problems = list(dict.fromkeys(problem for r in reports for problem in r.problems))
    lines += ["", f"bad files: {len(problems)}", *(f"  {problem}" for problem in problems)]
    return "\n".join(lines)

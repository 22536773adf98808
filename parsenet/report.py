"""Console tables and ``metrics.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from parsenet.fileio import atomic_write

SUMMARY_KEYS = (
    ("mIoU", "mIoU"),
    ("pixel_acc", "pixel acc"),
    ("mean_acc", "mean acc"),
    ("fwIoU", "fwIoU"),
    ("boundary_iou", "boundary IoU"),  # Cheng et al. 2021: IoU within the contours' band
    # Per image, from the same predictions: what global context is for (lower / higher is better).
    ("out_of_context", "out of context"),
    ("class_set_accuracy", "class-set acc"),
)
LABEL_WIDTH = max(len(label) for _, label in SUMMARY_KEYS)


def _percent(value: float | None) -> str:
    return "   n/a" if value is None else f"{100.0 * value:6.2f}"


def scores_table(columns: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> str:
    """Per-class IoU (in %) of one or more results side by side, then the summary scores (a
    score a result lacks, as in an older ``metrics.json``, shows as n/a).

    Args:
        columns: column title → scores as returned by ``SplitScores.compute``.
        class_names: row order.
    """
    titles = list(columns)
    name_width = max(LABEL_WIDTH, *(len(name) for name in [*class_names, "class"]))
    widths = [max(6, len(title)) for title in titles]

    def row(label: str, cells: Sequence[str]) -> str:
        return label.ljust(name_width) + "".join(
            f"  {cell:>{width}}" for cell, width in zip(cells, widths, strict=True)
        )

    header = row("class", titles)
    rule = "-" * len(header)
    lines = [header, rule]
    lines += [
        row(name, [_percent(columns[t]["per_class_iou"].get(name)) for t in titles])
        for name in class_names
    ]
    lines.append(rule)
    lines += [
        row(label, [_percent(columns[t].get(key)) for t in titles]) for key, label in SUMMARY_KEYS
    ]
    return "\n".join(lines)


def class_table(scores: Mapping[str, Any], class_names: Sequence[str]) -> str:
    """IoU, accuracy and boundary IoU (bIoU, in %) of every class, then the summary scores, for
    one result (bIoU n/a in an older ``metrics.json`` without it)."""
    width = max(LABEL_WIDTH, *(len(name) for name in [*class_names, "class"]))
    lines = [f"{'class'.ljust(width)}     IoU     acc    bIoU", "-" * (width + 24)]
    boundary = scores.get("per_class_boundary_iou", {})
    for name in class_names:
        iou, accuracy = scores["per_class_iou"].get(name), scores["per_class_acc"].get(name)
        cells = [_percent(value) for value in (iou, accuracy, boundary.get(name))]
        lines.append(f"{name.ljust(width)}  {'  '.join(cells)}")
    lines.append("-" * (width + 24))
    lines += [f"{label.ljust(width)}  {_percent(scores.get(key))}" for key, label in SUMMARY_KEYS]
    return "\n".join(lines)


def write_json(path: str | Path, values: Mapping[str, Any]) -> Path:
    """Write JSON through a temporary file and a rename (never half-written)."""
    text = json.dumps(values, indent=2) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def metrics_record(
    scores: Mapping[str, Any],
    *,
    num_images: int,
    mode: str,
    checkpoint: str,
    dataset: str,
    split: str,
    inference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``metrics.json``: scores (fractions in [0, 1]) and what they were measured on.

    ``mode`` names the inference mode (``whole``, ``slide``, ``msflip``, or ``predictions`` for
    a folder of saved predictions); ``inference`` holds its settings.

    ``per_class_iou`` maps class name → IoU, or ``null`` for a class absent from both labels
    and predictions (left out of the means); ``boundary_iou`` and ``per_class_boundary_iou``
    likewise for :class:`parsenet.metrics.BoundaryIoU`. ``out_of_context`` and
    ``class_set_accuracy`` are the per-image context statistics of
    :class:`parsenet.metrics.ContextStatistics`.
    """
    return {
        **scores,
        "num_images": num_images,
        "mode": mode,
        "inference": dict(inference or {"mode": mode}),
        "checkpoint": checkpoint,
        "dataset": dataset,
        "split": split,
    }


def bad_samples_note(record: Mapping[str, Any]) -> str | None:
    """The console line about skipped samples (``data.on_bad_sample=skip``), if any were."""
    report = record.get("bad_samples")
    if not report or not report["skipped"]:
        return None
    return (
        f"skipped {report['skipped']} bad samples from {len(report['files'])} files "
        "(data.on_bad_sample=skip): see bad_samples in metrics.json"
    )

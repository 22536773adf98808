"""``table.html``: an ablation table as a page — each row's mIoU as mean ± sd bars over seeds,
its paired difference from the baseline row with the 95 % interval, and for each row against the
baseline (same seed) the images whose per-image mIoU differs most both ways, drawn as image |
label | baseline prediction | row prediction from the two runs' checkpoints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from parsenet.data import build_dataset
from parsenet.engine.scoring.inference import InferenceMode
from parsenet.html.page import label_panels, render, write_page
from parsenet.image_scores import read_per_image_miou, thumbnail_size
from parsenet.loading import InferenceModel, load_for_inference, predict

CONTRASTS = 3  # images drawn per row and direction (where the row helps most, hurts most)
BAR_WIDTH = 420  # pixels of the bars' axis
ROW_HEIGHT = 26


@dataclass
class AblationRow:
    """One row of the table as the page shows it.

    Attributes:
        label, experiment: its title and config name.
        values: its mIoU per seed, in %.
        paper: the paper's mIoU (%), if known.
        difference: the paired difference from the baseline in points (mean, sd or None for
            one seed, half-width of the 95 % interval or None, seeds paired); None for the
            baseline or with no common seed.
        runs: (seed, run folder) of the baseline and of this row, same seed, for the images
            (None: no common seed).
    """

    label: str
    experiment: str
    values: list[float]
    paper: float | None = None
    difference: tuple[float, float | None, float | None, int] | None = None
    runs: tuple[Any, Path, Path] | None = field(default=None)


def write_ablation_report(
    path: str | Path, title: str, notes: Sequence[str], rows: Sequence[AblationRow], baseline: str
) -> Path:
    """Write ``table.html`` atomically (see :func:`ablation_page`)."""
    return write_page(path, ablation_page(title, notes, rows, baseline))


def ablation_page(
    title: str, notes: Sequence[str], rows: Sequence[AblationRow], baseline: str
) -> str:
    """The page: ``notes`` (the command, the setup) under the title, the bars, the differences
    and the contrasting images of every row against ``baseline`` (an experiment name)."""
    labels = {row.experiment: row.label for row in rows}
    return render(
        "ablation.html.j2",
        title=title,
        heading=title,
        subheading=f"baseline: {labels[baseline]}",
        notes=notes,
        bars=bar_chart(rows),
        differences=difference_chart([row for row in rows if row.difference is not None]),
        contrasts=[
            {"row": row, **image_contrasts(row)}
            for row in rows
            if row.experiment != baseline and row.difference is not None
        ],
    )


def axis_end(values: Sequence[float]) -> float:
    """The end of an axis from 0 over ``values`` (in %): the largest, rounded up to a ten."""
    return float(10 * -(-max([10.0, *values]) // 10))


def bar_chart(rows: Sequence[AblationRow]) -> dict[str, Any]:
    """The geometry of the mean ± sd bars (pixels), one line per row, with every seed's dot and
    the paper's number as a tick."""
    values = [v for row in rows for v in row.values] + [r.paper for r in rows if r.paper]
    high = axis_end(values)

    def x(value: float) -> float:
        return round(BAR_WIDTH * value / high, 1)

    lines = []
    for position, row in enumerate(rows):
        y = position * ROW_HEIGHT
        line: dict[str, Any] = {"row": row, "y": y, "mid": y + ROW_HEIGHT / 2, "bar": None}
        if row.values:
            mean = sum(row.values) / len(row.values)
            sd = standard_deviation(row.values)
            line["bar"] = {"width": x(mean), "mean": mean, "sd": sd, "text": x(mean) + 6}
            if sd is not None:
                bar = line["bar"]
                bar.update(low=x(max(0.0, mean - sd)), high=x(min(high, mean + sd)))
                bar["text"] = bar["high"] + 6  # the numbers right of the whisker
            line["dots"] = [x(value) for value in row.values]
        line["paper"] = x(row.paper) if row.paper else None
        lines.append(line)
    ticks = [{"x": x(value), "value": value} for value in range(0, int(high) + 1, 10)]
    return {"lines": lines, "ticks": ticks, "width": BAR_WIDTH, "height": len(rows) * ROW_HEIGHT}


def difference_chart(rows: Sequence[AblationRow]) -> dict[str, Any]:
    """The geometry of the paired differences (a dot at the mean, a line over its 95 %
    interval) on an axis symmetric around 0."""
    reach = [abs(r.difference[0]) + (r.difference[2] or 0.0) for r in rows if r.difference]
    half = float(-(-max([1.0, *reach]) // 1))  # rounded up to a whole point

    def x(value: float) -> float:
        return round(BAR_WIDTH / 2 * (1 + value / half), 1)

    lines = []
    for position, row in enumerate(rows):
        mean, sd, half_width, seeds = row.difference
        y = position * ROW_HEIGHT + ROW_HEIGHT / 2
        interval = None
        if half_width is not None:
            interval = {"low": x(mean - half_width), "high": x(mean + half_width)}
        beyond = half_width is not None and abs(mean) > half_width
        lines.append(
            {
                "row": row,
                "y": y,
                "x": x(mean),
                "mean": mean,
                "sd": sd,
                "half_width": half_width,
                "seeds": seeds,
                "interval": interval,
                "beyond": beyond,
            }
        )
    return {
        "lines": lines,
        "zero": x(0.0),
        "ends": [{"x": x(-half), "value": -half}, {"x": x(half), "value": half}],
        "width": BAR_WIDTH,
        "height": max(1, len(rows)) * ROW_HEIGHT,
    }


def standard_deviation(values: Sequence[float]) -> float | None:
    """The sample standard deviation (n − 1); None for fewer than two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def image_contrasts(row: AblationRow, count: int = CONTRASTS) -> dict[str, Any]:
    """The ``count`` images where ``row`` beats its baseline run by most per-image mIoU
    (``helps``) and trails it by most (``hurts``), each with both runs' per-image mIoU and its
    pictures; ``missing`` names a run without ``per_image.csv`` (an older run: nothing drawn)."""
    seed, baseline_run, row_run = row.runs
    tables = [run / "per_image.csv" for run in (baseline_run, row_run)]
    missing = [str(path) for path in tables if not path.is_file()]
    if missing:
        return {"seed": seed, "missing": missing, "helps": [], "hurts": []}
    before, after = (read_per_image_miou(path) for path in tables)
    changes = sorted((after[name] - before[name], name) for name in before.keys() & after.keys())
    hurts = [item for item in changes[:count] if item[0] < 0]
    helps = [item for item in reversed(changes[-count:]) if item[0] > 0]
    record = json.loads((row_run / "metrics.json").read_text())
    models = [
        load_for_inference(run / "checkpoints" / "last.pt", "cpu")
        for run in (baseline_run, row_run)
    ]
    pictures = split_pictures(
        [name for _, name in [*helps, *hurts]], models, record["split"], recorded_mode(record)
    )

    def entries(items: list[tuple[float, str]]) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "change": 100 * change,
                "baseline": 100 * before[name],
                "row": 100 * after[name],
                "panels": pictures[name],
            }
            for change, name in items
        ]

    return {"seed": seed, "missing": [], "helps": entries(helps), "hurts": entries(hurts)}


def recorded_mode(record: dict[str, Any]) -> InferenceMode:
    """The inference mode a ``metrics.json`` record names (whole when it names none)."""
    described = dict(record.get("inference") or {"mode": "whole"})
    if "scales" in described:
        described["scales"] = tuple(described["scales"])
    return InferenceMode(**described)


def split_pictures(
    names: Sequence[str], models: Sequence[InferenceModel], split: str, mode: InferenceMode
) -> dict[str, list[dict[str, str]]]:
    """Image | label | baseline prediction | row prediction of each named image of ``split``
    (the baseline checkpoint's data), each model predicting it once, at most
    :data:`~parsenet.image_scores.THUMBNAIL_SIDE` pixels wide."""
    baseline, row = models
    dataset = build_dataset(baseline.data_config, split)
    indices = {dataset.sample_name(index): index for index in range(len(dataset))}
    pictures = {}
    for name in names:
        image, label = dataset.load_pair(indices[name])
        predictions = [predict(model, image, mode) for model in (baseline, row)]
        size = thumbnail_size(*label.shape)[::-1]  # PIL: (width, height)

        def small(array: np.ndarray, resample: int = Image.NEAREST) -> np.ndarray:
            return np.asarray(Image.fromarray(array).resize(size, resample))  # noqa: B023

        pictures[name] = label_panels(
            small(image, Image.BILINEAR),
            small(label),
            [
                ("baseline prediction", small(predictions[0])),
                ("row prediction", small(predictions[1])),
            ],
            baseline.palette[: baseline.num_classes],
            baseline.ignore_index,
            errors=False,
        )
    return pictures

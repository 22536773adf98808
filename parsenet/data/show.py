"""``parsenet-data show``: a grid of images with their labels, for a person to look at."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from parsenet.data.base import SegmentationDataset
from parsenet.visualize import colorize, overlay

GAP = 6


def labelled_pair(
    dataset: SegmentationDataset, index: int, height: int
) -> tuple[np.ndarray, set[int]]:
    """Image | label overlay of one sample at ``height`` pixels, and the classes it shows."""
    image, label = dataset.load_pair(index)
    info = dataset.info
    coloured = colorize(label, info.palette, info.ignore_index)
    panel = np.concatenate(
        [image, np.full((image.shape[0], GAP // 2, 3), 255, np.uint8), overlay(image, coloured)],
        axis=1,
    )
    width = round(panel.shape[1] * height / panel.shape[0])
    resized = Image.fromarray(panel).resize((width, height), Image.Resampling.BILINEAR)
    present = {int(v) for v in np.unique(label) if v < info.num_classes}
    return np.asarray(resized), present


def legend(dataset: SegmentationDataset, classes: set[int], width: int) -> np.ndarray:
    """Colour swatches with the names of ``classes``, wrapped to ``width`` pixels."""
    font = ImageFont.load_default(size=14)
    entries = [(dataset.info.palette[c], dataset.info.class_names[c]) for c in sorted(classes)]
    sizes = [22 + int(font.getlength(name)) + 16 for _, name in entries]
    rows, x = 1, 0
    for size in sizes:
        if x + size > width and x:
            rows, x = rows + 1, 0
        x += size
    canvas = Image.new("RGB", (width, rows * 22 + 4), "white")
    draw = ImageDraw.Draw(canvas)
    x, y = 0, 2
    for (colour, name), size in zip(entries, sizes, strict=True):
        if x + size > width and x:
            x, y = 0, y + 22
        draw.rectangle((x, y + 2, x + 16, y + 18), fill=tuple(colour), outline="black")
        draw.text((x + 22, y + 10), name, fill="black", font=font, anchor="lm")
        x += size
    return np.asarray(canvas)


def dataset_grid(
    dataset: SegmentationDataset, count: int = 8, seed: int = 0, columns: int = 2, height: int = 200
) -> np.ndarray:
    """``count`` random samples (fixed by ``seed``) as image | label panels in a grid, with a
    legend of the classes shown."""
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(dataset), size=min(count, len(dataset)), replace=False))
    panels, shown = [], set()
    for index in picks:
        panel, present = labelled_pair(dataset, int(index), height)
        panels.append(panel)
        shown |= present
    cell = max(panel.shape[1] for panel in panels)
    rows = []
    for start in range(0, len(panels), columns):
        row = np.full((height + GAP, columns * (cell + GAP), 3), 255, np.uint8)
        for slot, panel in enumerate(panels[start : start + columns]):
            row[:height, slot * (cell + GAP) : slot * (cell + GAP) + panel.shape[1]] = panel
        rows.append(row)
    grid = np.concatenate(rows, axis=0)
    return np.concatenate([grid, legend(dataset, shown, grid.shape[1])], axis=0)

"""Colouring labels with a dataset palette and drawing prediction overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from parsenet.fileio import atomic_write

IGNORE_COLOUR = (224, 224, 192)  # the VOC devkit's colour for the void band


def colorize(
    label: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255
) -> np.ndarray:
    """Turn an H×W array of class indices into an H×W×3 uint8 image (ignore → light grey)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    table[ignore_index] = IGNORE_COLOUR
    return table[label.astype(np.uint8)]


def overlay(image: np.ndarray, coloured: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend a coloured label map over an RGB image.

    Black label pixels (the VOC palette's background) are left unblended, so the image stays
    visible around the objects.
    """
    tinted = coloured.any(axis=-1, keepdims=True)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * coloured.astype(np.float32)
    return np.where(tinted, blended.round(), image).astype(np.uint8)


def comparison_panel(
    image: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray,
    palette: Sequence[Sequence[int]],
    ignore_index: int = 255,
    alpha: float = 0.5,
) -> np.ndarray:
    """Image | label overlay | prediction overlay, side by side, with a 4-pixel white gap."""
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    truth = overlay(image, colorize(label, palette, ignore_index), alpha)
    predicted = overlay(image, colorize(prediction, palette, ignore_index), alpha)
    return np.concatenate([image, gap, truth, gap, predicted], axis=1)


def error_map(
    label: np.ndarray,
    prediction: np.ndarray,
    palette: Sequence[Sequence[int]],
    ignore_index: int = 255,
    dim: float = 0.75,
) -> np.ndarray:
    """Where a prediction is wrong: wrong pixels in the colour of the class predicted, right ones
    in their class's colour faded ``dim`` of the way to white, ignored ones in the void colour."""
    predicted = colorize(prediction, palette, ignore_index).astype(np.float32)
    faded = (predicted + dim * (255.0 - predicted)).round().astype(np.uint8)
    wrong = (prediction != label)[..., None]
    coloured = np.where(wrong, predicted.astype(np.uint8), faded)
    void = np.asarray(IGNORE_COLOUR, dtype=np.uint8)
    return np.where((label == ignore_index)[..., None], void, coloured)


def save_label_png(label: np.ndarray, palette: Sequence[Sequence[int]], path: str | Path) -> Path:
    """Write class indices as a palette (mode P) PNG atomically, creating the folder: readers get
    the indices back (as VOC's labels and its evaluation server expect), viewers the colours."""
    png = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="P")
    flat = [value for colour in palette for value in colour]
    png.putpalette(flat + [0] * (768 - len(flat)))
    return atomic_write(path, lambda handle: png.save(handle, format="PNG"))


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 array as PNG atomically, creating the folder."""
    image = Image.fromarray(array)
    return atomic_write(path, lambda handle: image.save(handle, format="PNG"))


def confusion_image(matrix: np.ndarray, class_names: Sequence[str], cell: int = 28) -> np.ndarray:
    """The confusion matrix drawn row-normalised (each label's pixels sum to 100 %): white to dark
    blue cells with their percentage, label names down the left, prediction names along the top.
    """
    from PIL import ImageDraw, ImageFont

    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    font = ImageFont.load_default(size=max(8, cell // 2 - 2))
    margin = max(int(font.getlength(name)) for name in class_names) + 12
    size = len(class_names) * cell
    canvas = Image.new("RGB", (margin + size + 4, margin + size + 4), "white")
    draw = ImageDraw.Draw(canvas)
    draw.multiline_text(
        (4, 4), "rows: label\ncolumns:\nprediction\n(% of row)", fill="gray", font=font
    )
    for row, name in enumerate(class_names):
        y = margin + row * cell
        draw.text((margin - 6, y + cell / 2), name, fill="black", font=font, anchor="rm")
        column_label = Image.new("RGB", (margin, cell), "white")
        ImageDraw.Draw(column_label).text((6, cell / 2), name, fill="black", font=font, anchor="lm")
        canvas.paste(column_label.rotate(90, expand=True), (margin + row * cell, 0))
        for column in range(len(class_names)):
            value = share[row, column]
            shade = tuple(int(255 - value * (255 - c)) for c in (8, 48, 107))
            x = margin + column * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=shade, outline=(230, 230, 230))
            if value >= 0.005:
                text = "white" if value > 0.5 else "black"
                draw.text(
                    (x + cell / 2, y + cell / 2), f"{100 * value:.0f}", fill=text, font=font,
                    anchor="mm",
                )  # fmt: skip
    return np.asarray(canvas)

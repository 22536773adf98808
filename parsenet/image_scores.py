"""Per-image scores of a split: one small record of numbers per image (mIoU, pixel accuracy, out
of context, its classes) and the k worst images by per-image mIoU, kept with small pictures in a
bounded heap, so that memory stays bounded for splits of thousands of images. Written as
``per_image.csv`` beside ``metrics.json``; the report draws the worst images."""

from __future__ import annotations

import csv
import heapq
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from parsenet.fileio import atomic_write

WORST_IMAGES = 8  # k: the worst images kept with their pictures (report.html draws them)
THUMBNAIL_SIDE = 256  # the longest side of a kept picture, in pixels
CSV_COLUMNS = (
    "name",
    "mIoU",
    "pixel_acc",
    "out_of_context",
    "labelled_pixels",
    "classes",
    "predicted_classes",
)


@dataclass(frozen=True)
class ImageRecord:
    """The scores of one image, over its labelled pixels (the ignore index left out).

    Attributes:
        index: its place in the split; name: its sample id.
        pixels: labelled pixels.
        miou: mean IoU over the classes present in its label or its prediction (None without a
            labelled pixel); pixel_acc: the fraction predicted right (None likewise).
        out_of_context: the fraction predicted as a class absent from its label (None likewise).
        classes: the class indices in its label; predicted: those predicted on labelled pixels
            (an index ≥ K stands for a prediction outside the classes).
    """

    index: int
    name: str
    pixels: int
    miou: float | None
    pixel_acc: float | None
    out_of_context: float | None
    classes: tuple[int, ...]
    predicted: tuple[int, ...]

    @property
    def out_of_context_classes(self) -> tuple[int, ...]:
        """Classes predicted in the image but absent from its label."""
        return tuple(c for c in self.predicted if c not in self.classes)


@dataclass
class KeptImage:
    """One of the worst images: its record, its label and prediction shrunk to at most
    :data:`THUMBNAIL_SIDE` pixels (uint8, nearest neighbour) and, once attached, its RGB image at
    that size."""

    record: ImageRecord
    label: np.ndarray
    prediction: np.ndarray
    image: np.ndarray | None = field(default=None)


def thumbnail_size(height: int, width: int, side: int = THUMBNAIL_SIDE) -> tuple[int, int]:
    """(height, width) scaled so the longest side is at most ``side`` (never enlarged)."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def nearest_grid(size: int, shrunk: int, device: torch.device) -> torch.Tensor:
    """The source rows (or columns) a nearest-neighbour shrink from ``size`` to ``shrunk`` samples:
    the pixel under each new pixel's centre."""
    return ((torch.arange(shrunk, device=device) + 0.5) * size / shrunk).long().clamp(max=size - 1)


class ImageScores:
    """Per-image records of a split and its ``keep`` worst images by per-image mIoU.

    Records hold numbers only. The worst images are kept in a heap of at most ``keep`` entries,
    each with a small label and prediction (see :class:`KeptImage`); ties go to the earlier
    image, so the same split gives the same images however it is shared between processes.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, keep: int = WORST_IMAGES) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.keep = keep
        self.records: list[ImageRecord] = []
        self.heap: list[tuple[float, int, KeptImage]] = []  # (−mIoU, −index, entry): worst kept

    def update(
        self,
        prediction: torch.Tensor,
        label: torch.Tensor,
        names: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        """Add one image (H×W) or a batch (N×H×W); ``names`` and ``indices`` default to the
        images' order of arrival."""
        n, (height, width) = self.num_classes, label.shape[-2:]
        label = label.reshape(-1, height, width).to(torch.int64)
        prediction = prediction.reshape(-1, height, width).to(torch.int64)
        count = label.shape[0]
        if indices is None:
            indices = range(len(self.records), len(self.records) + count)
        names = [str(index) for index in indices] if names is None else names
        # One bincount: per image a K × (K + 1) confusion, the last column a prediction outside
        # the classes.
        valid = (label >= 0) & (label < n)
        image = torch.arange(count, device=label.device).view(-1, 1, 1).expand_as(label)
        predicted = torch.where((prediction >= 0) & (prediction < n), prediction, n)
        codes = (image[valid] * n + label[valid]) * (n + 1) + predicted[valid]
        size = count * n * (n + 1)
        confusions = torch.bincount(codes, minlength=size).reshape(count, n, n + 1).cpu().numpy()
        for position, confusion in enumerate(confusions):
            record = image_record(int(indices[position]), str(names[position]), confusion)
            self.records.append(record)
            if record.miou is not None and self.would_keep(record):
                self.push(record, label[position], prediction[position])

    def would_keep(self, record: ImageRecord) -> bool:
        """Whether ``record`` is among the ``keep`` worst so far."""
        if len(self.heap) < self.keep:
            return True
        kept_miou, kept_index = -self.heap[0][0], -self.heap[0][1]
        return (record.miou, record.index) < (kept_miou, kept_index)

    def push(self, record: ImageRecord, label: torch.Tensor, prediction: torch.Tensor) -> None:
        """Keep ``record`` with its label and prediction shrunk (dropping the best kept one when
        the heap is full)."""
        height, width = label.shape
        rows, columns = thumbnail_size(height, width)
        rows = nearest_grid(height, rows, label.device)
        columns = nearest_grid(width, columns, label.device)

        def shrink(values: torch.Tensor) -> np.ndarray:
            return values[rows][:, columns].clamp(0, 255).to(torch.uint8).cpu().numpy()

        self.offer(KeptImage(record, shrink(label), shrink(prediction)))

    def offer(self, entry: KeptImage) -> None:
        """Keep ``entry`` if it is among the ``keep`` worst."""
        if self.keep <= 0 or not self.would_keep(entry.record):
            return
        item = (-entry.record.miou, -entry.record.index, entry)
        if len(self.heap) < self.keep:
            heapq.heappush(self.heap, item)
        else:
            heapq.heapreplace(self.heap, item)

    def worst(self) -> list[KeptImage]:
        """The kept images, worst first (lowest mIoU; ties: the earlier image)."""
        return [entry for _, _, entry in sorted(self.heap, key=lambda item: (-item[0], -item[1]))]

    def attach_images(self, read: Callable[[int], np.ndarray]) -> None:
        """Give every kept image its RGB picture, read by ``read(index)`` (an H×W×3 uint8 array)
        and shrunk to its label's size."""
        for entry in self.worst():
            if entry.image is None:
                height, width = entry.label.shape
                picture = Image.fromarray(read(entry.record.index)).resize((width, height))
                entry.image = np.asarray(picture.convert("RGB"))

    @classmethod
    def merged(cls, parts: Sequence[ImageScores]) -> ImageScores:
        """One split's scores from its processes' shares: records in split order, the worst
        kept images of all."""
        first = parts[0]
        whole = cls(first.num_classes, first.ignore_index, first.keep)
        whole.records = sorted(
            (record for part in parts for record in part.records), key=lambda r: r.index
        )
        for part in parts:
            for _, _, entry in part.heap:
                whole.offer(entry)
        return whole


def image_record(index: int, name: str, confusion: np.ndarray) -> ImageRecord:
    """The record of one image from its K × (K + 1) confusion (rows: label; columns: prediction,
    the last one a prediction outside the classes)."""
    n = confusion.shape[0]
    true_positive = np.diag(confusion[:, :n])
    label_count = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    union = label_count + predicted_count[:n] - true_positive
    pixels = int(label_count.sum())
    classes = tuple(int(c) for c in np.flatnonzero(label_count))
    predicted = tuple(int(c) for c in np.flatnonzero(predicted_count))
    if not pixels:
        return ImageRecord(index, name, 0, None, None, None, classes, predicted)
    present = union > 0
    absent = np.append(label_count == 0, True)  # the outside column is never in the label
    return ImageRecord(
        index,
        name,
        pixels,
        miou=float((true_positive[present] / union[present]).mean()),
        pixel_acc=float(true_positive.sum() / pixels),
        out_of_context=float(predicted_count[absent].sum() / pixels),
        classes=classes,
        predicted=predicted,
    )


def class_list(indices: Iterable[int], class_names: Sequence[str]) -> str:
    """Class names separated by ``;`` (an index outside the classes as ``#index``)."""
    return ";".join(class_names[i] if i < len(class_names) else f"#{i}" for i in indices)


def per_image_csv(records: Iterable[ImageRecord], class_names: Sequence[str]) -> str:
    """``per_image.csv``: one row per scored image, in split order (:data:`CSV_COLUMNS`;
    scores as fractions, empty for an image without a labelled pixel; classes as names
    separated by ``;``)."""

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.6f}"

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow(
            [
                record.name,
                number(record.miou),
                number(record.pixel_acc),
                number(record.out_of_context),
                record.pixels,
                class_list(record.classes, class_names),
                class_list(record.predicted, class_names),
            ]
        )
    return buffer.getvalue()


def write_per_image_csv(
    path: str | Path, records: Iterable[ImageRecord], class_names: Sequence[str]
) -> Path:
    """Write :func:`per_image_csv` atomically."""
    text = per_image_csv(records, class_names)
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def read_per_image_miou(path: str | Path) -> dict[str, float]:
    """Image name → per-image mIoU from a ``per_image.csv`` (images without one left out)."""
    with open(path, newline="") as handle:
        return {row["name"]: float(row["mIoU"]) for row in csv.DictReader(handle) if row["mIoU"]}

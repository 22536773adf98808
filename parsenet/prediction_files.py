"""Segmenting image files: label PNGs, overlays and side-by-side pictures for each input."""

from __future__ import annotations

import glob
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from parsenet.data.base import read_image
from parsenet.engine.inference import InferenceMode
from parsenet.errors import DataError
from parsenet.loading import WHOLE_IMAGE, InferenceModel, predict_batch
from parsenet.visualize import colorize, overlay, save_label_png, save_png

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
OUTPUT_FOLDERS = ("labels", "overlays", "side_by_side")


def find_inputs(inputs: str | Path) -> list[Path]:
    """The files ``inputs`` names: one file, the images in a folder, or a glob's matches."""
    path = Path(inputs).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not found:
        raise DataError(f"inputs={inputs}: no image files there (a file, a folder or a glob)")
    return found


def same_size_batches(
    paths: list[Path], batch_size: int, skipped: list[str]
) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Decoded images in batches of one size (never resized or padded, which would change
    the global context); unreadable files go to ``skipped`` with the reason."""
    batch: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        try:
            image = read_image(path)
        except DataError as error:
            log.warning("skipping %s", error)
            skipped.append(str(path))
            continue
        if batch and (image.shape != batch[0][1].shape or len(batch) == batch_size):
            yield batch
            batch = []
        batch.append((path, image))
    if batch:
        yield batch


@dataclass
class PredictionReport:
    """What :func:`predict_files` did: the inputs it wrote outputs for and those it skipped."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def write_outputs(
    image: np.ndarray,
    label: np.ndarray,
    palette: list[list[int]],
    alpha: float,
    out: Path,
    name: str,
) -> None:
    """``labels/<name>.png`` (class indices in a palette PNG), ``overlays/<name>.png`` and
    ``side_by_side/<name>.png`` (image | overlay) under ``out``, each written atomically."""
    blended = overlay(image, colorize(label, palette), alpha)
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    save_label_png(label, palette, out / "labels" / f"{name}.png")
    save_png(blended, out / "overlays" / f"{name}.png")
    save_png(np.concatenate([image, gap, blended], axis=1), out / "side_by_side" / f"{name}.png")


def predict_files(
    loaded: InferenceModel,
    inputs: str | Path,
    out: str | Path,
    batch_size: int = 4,
    alpha: float = 0.5,
    mode: InferenceMode = WHOLE_IMAGE,
    progress: Callable[[int], None] | None = None,
) -> PredictionReport:
    """Segment every image ``inputs`` names (a file, a folder or a glob) and write its label
    PNG, overlay and side-by-side picture under ``out``. Images of one size are batched;
    unreadable files are skipped and reported. ``progress`` is called with the files done.

    Raises:
        DataError: nothing matches ``inputs``, or none of the files could be read.
    """
    paths = find_inputs(inputs)
    report = PredictionReport()
    for batch in same_size_batches(paths, batch_size, report.skipped):
        labels = predict_batch(loaded, [image for _, image in batch], mode)
        for (source, image), label in zip(batch, labels, strict=True):
            write_outputs(image, label, loaded.palette, alpha, Path(out), source.stem)
            report.written.append(source)
        if progress is not None:
            progress(len(report.written) + len(report.skipped))
    if not report.written:
        raise DataError(f"inputs={inputs}: none of the {len(paths)} files could be read")
    return report

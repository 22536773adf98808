"""Segmenting image files: label PNGs, overlays and side-by-side pictures for each input."""

from __future__ import annotations

import glob
import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from parsenet.data.base import read_image
from parsenet.engine.scoring.inference import WHOLE_IMAGE, InferenceMode
from parsenet.errors import ConfigError, DataError
from parsenet.loading import InferenceModel, predict_batch
from parsenet.visualize import colorize, overlay, save_label_png, save_png

log = logging.getLogger(__name__)
# What a folder input takes (a glob takes any name). Pillow decodes GIFs (the first frame).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
OUTPUT_FOLDERS = ("labels", "overlays", "side_by_side")
RUN_FOLDER_MARK = ".hydra"  # what every command writes into its run folder first
SHOWN_NAMES = 3


def find_inputs(inputs: str | Path) -> list[Path]:
    """The files ``inputs`` names: one file, the images in a folder (see
    :func:`folder_images`), or a glob's matches (see :func:`glob_matches`)."""
    path = Path(inputs).expanduser()
    if path.is_file():
        return [path]
    found = folder_images(path) if path.is_dir() else glob_matches(path)
    if not found:
        raise DataError(f"inputs={inputs}: no image files there (a file, a folder or a glob)")
    return found


def folder_images(folder: Path) -> list[Path]:
    """The entries of ``folder`` named like an image (:data:`IMAGE_SUFFIXES`); its other files
    are named in one log line."""
    entries = sorted(folder.iterdir())
    images = [entry for entry in entries if entry.suffix.lower() in IMAGE_SUFFIXES]
    others = [entry.name for entry in entries if entry.is_file() and entry not in images]
    if others:
        log.warning(
            "inputs=%s: left out %d file(s) not named like an image (%s): %s; pass a glob such "
            "as '%s/*' to try them",
            folder,
            len(others),
            " ".join(sorted(IMAGE_SUFFIXES)),
            few(others),
            folder,
        )
    return images


def glob_matches(pattern: Path) -> list[Path]:
    """The files a glob matches (see :func:`each_file_once`), without those in earlier run
    folders below the glob's fixed part (an earlier prediction's outputs), which are named in
    one log line."""
    matches = each_file_once(Path(p) for p in glob.glob(str(pattern), recursive=True))
    base = fixed_part(pattern)
    earlier = [path for path in matches if in_run_folder(path, base)]
    if earlier:
        log.warning(
            "inputs=%s: left out %d file(s) inside earlier run folders (with %s/): %s; name such "
            "a folder in inputs= to segment its files",
            pattern,
            len(earlier),
            RUN_FOLDER_MARK,
            few([str(path) for path in earlier]),
        )
    return [path for path in matches if path not in earlier]


def each_file_once(paths: Iterable[Path]) -> list[Path]:
    """The files among ``paths``, sorted, each by the shortest of the paths that reach it (a
    symlink loop under ``**`` reaches the same files again and again)."""
    chosen: dict[str, Path] = {}
    for path in sorted(paths, key=lambda path: (len(path.parts), path)):
        if path.is_file():
            chosen.setdefault(os.path.realpath(path), path)
    return sorted(chosen.values())


def fixed_part(pattern: Path) -> Path:
    """The folder a glob starts from: its parts before the first wildcard."""
    parts = []
    for part in pattern.parts[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts)


def in_run_folder(path: Path, base: Path) -> bool:
    """Whether a folder between ``base`` (excluded) and ``path`` is a run folder."""
    below = path.parents[: len(path.parts) - len(base.parts) - 1]
    return any((folder / RUN_FOLDER_MARK).is_dir() for folder in below)


def few(names: Sequence[str]) -> str:
    """The first :data:`SHOWN_NAMES` of ``names``, then how many more."""
    more = len(names) - SHOWN_NAMES
    return ", ".join(names[:SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")


def common_root(paths: Sequence[Path]) -> Path:
    """The deepest folder holding every path: a folder input's folder, a glob's deepest common
    parent, a single file's own folder."""
    return Path(os.path.commonpath([path.absolute().parent for path in paths]))


def output_names(paths: Sequence[Path]) -> dict[Path, Path]:
    """Each input's output file name, relative to an output folder: its path under the
    inputs' :func:`common_root` (sub-folders kept) with the suffix replaced by ``.png``
    (``a/same.jpg`` → ``a/same.png``). Inputs that would share a name keep their own suffix
    (``x.jpg`` → ``x.jpg.png``, ``x.png`` → ``x.png.png``), so no two inputs share an output."""
    root = common_root(paths)
    relative = {path: path.absolute().relative_to(root) for path in paths}
    names = {path: name.with_suffix("") for path, name in relative.items()}
    while clashing := _sharing_a_name(names):
        for path in clashing:
            names[path] = relative[path]
    outputs = {path: name.with_name(f"{name.name}.png") for path, name in names.items()}
    assert len(set(outputs.values())) == len(outputs), "two inputs map to one output"
    return outputs


def _sharing_a_name(names: dict[Path, Path]) -> list[Path]:
    """The inputs whose name another input has too and that still lack their suffix."""
    holders: dict[Path, list[Path]] = defaultdict(list)
    for path, name in names.items():
        holders[name].append(path)
    return [
        path
        for group in holders.values()
        if len(group) > 1
        for path in group
        if names[path].name != path.name
    ]


def check_settings(batch_size: int, alpha: float) -> None:
    """Raise :class:`ConfigError` unless ``batch_size`` is a whole number ≥ 1 and ``alpha``
    a number in [0, 1]."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a whole number ≥ 1")
    number = isinstance(alpha, int | float) and not isinstance(alpha, bool)
    if not number or not (math.isfinite(alpha) and 0 <= alpha <= 1):
        raise ConfigError(f"alpha={alpha!r} must be between 0 and 1 (the overlay's opacity)")


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
    name: Path,
) -> None:
    """``labels/<name>`` (class indices in a palette PNG), ``overlays/<name>`` and
    ``side_by_side/<name>`` (image | overlay) under ``out``, each written atomically; ``name``
    is a relative ``.png`` path (see :func:`output_names`)."""
    blended = overlay(image, colorize(label, palette), alpha)
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    save_label_png(label, palette, out / "labels" / name)
    save_png(blended, out / "overlays" / name)
    save_png(np.concatenate([image, gap, blended], axis=1), out / "side_by_side" / name)


def predict_files(
    loaded: InferenceModel,
    inputs: str | Path,
    out: str | Path,
    batch_size: int = 4,
    alpha: float = 0.5,
    mode: InferenceMode = WHOLE_IMAGE,
    progress: Callable[[int, int], None] | None = None,
) -> PredictionReport:
    """Segment every image ``inputs`` names (a file, a folder or a glob) and write its label
    PNG, overlay and side-by-side picture under ``out``, named as :func:`output_names` says
    (``labels/a/same.png`` for ``a/same.jpg``). Images of one size are batched; unreadable
    files are skipped and reported. ``progress`` is called with the files done and their total.

    Raises:
        ConfigError: ``batch_size`` below 1 or ``alpha`` outside [0, 1] (nothing is written).
        DataError: nothing matches ``inputs``, or none of the files could be read.
    """
    check_settings(batch_size, alpha)
    paths = find_inputs(inputs)
    names = output_names(paths)
    report = PredictionReport()
    for batch in same_size_batches(paths, batch_size, report.skipped):
        labels = predict_batch(loaded, [image for _, image in batch], mode)
        for (source, image), label in zip(batch, labels, strict=True):
            write_outputs(image, label, loaded.palette, alpha, Path(out), names[source])
            report.written.append(source)
        if progress is not None:
            progress(len(report.written) + len(report.skipped), len(paths))
    if not report.written:
        raise DataError(f"inputs={inputs}: none of the {len(paths)} files could be read")
    return report

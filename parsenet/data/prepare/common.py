"""What the dataset converters share: index PNGs, list files, split-size checks, file links."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from parsenet.errors import DataError

log = logging.getLogger(__name__)


def write_list(path: Path, ids: Iterable[str]) -> None:
    """Write one id per line."""
    path.write_text("".join(f"{i}\n" for i in ids))


def read_ids(path: Path) -> list[str]:
    """The ids of a list file (first field of each non-empty line)."""
    if not path.is_file():
        raise DataError(f"list file {path} does not exist")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def check_count(what: str, found: int, expected: int, allow_partial: bool) -> None:
    """Assert a split has its published size (a subset passes with ``--allow-partial``)."""
    if found != expected and not allow_partial:
        raise DataError(
            f"{what}: expected {expected:,} images, found {found:,}; the download is "
            "incomplete or not the official release (pass --allow-partial to accept a subset)"
        )


def check_splits(name: str, lists: Path, sizes: Mapping[str, int], allow_partial: bool) -> None:
    """Assert the published size of every split whose list file ``lists/<split>.txt`` is."""
    for split, size in sizes.items():
        check_count(f"{name} {split}", len(read_ids(lists / f"{split}.txt")), size, allow_partial)


def check_prepared(
    folder: Path, name: str, lists: Path, sizes: Mapping[str, int], allow_partial: bool
) -> bool:
    """Whether ``folder`` is already prepared; if it is, its splits are checked (an error says
    which folder to delete to prepare it again)."""
    if not folder.is_dir():
        return False
    log.info("%s exists; checking it", folder)
    try:
        check_splits(name, lists, sizes, allow_partial)
    except DataError as error:
        raise DataError(f"{error}; delete {folder} to prepare it again") from None
    return True


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (a file, or a folder to put it in), else copy it."""
    if not source.is_file():
        raise DataError(f"{source} does not exist; the unpacked release is incomplete")
    if target.is_dir():
        target = target / source.name
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def integer_map(values: np.ndarray, path: Path, key: str, size: int) -> np.ndarray:
    """A 2-D label map read from a ``.mat`` (integers, or MATLAB doubles holding integers)
    checked to lie in ``0 … size−1``, as int64."""
    values = np.asarray(values)
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        raise DataError(f"{path}: {key} must be a 2-D numeric label map")
    integers = values.astype(np.int64)
    if np.any(integers != values) or integers.min(initial=0) < 0 or integers.max(initial=0) >= size:
        raise DataError(f"{path}: {key} must hold whole numbers 0–{size - 1}")
    return integers


def label_lookup(mapping: Sequence[tuple[int, int]], size: int, default: int) -> np.ndarray:
    """A uint8 table over raw values ``0 … size−1``: ``default`` except the given pairs."""
    table = np.full(size, default, dtype=np.uint8)
    for raw, index in mapping:
        table[raw] = index
    return table

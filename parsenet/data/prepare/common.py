"""The one flow every dataset goes through (:class:`Preparer`, :func:`prepare`) and what the
converters share: list files, split-size checks, file links, label maps."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

from parsenet.data.info import VOC_COLOURS
from parsenet.data.prepare.archive import extract, find_one
from parsenet.data.prepare.download import Source, fetch
from parsenet.errors import DataError
from parsenet.fileio import atomic_write, staged_folder
from parsenet.visualize import save_label_png

log = logging.getLogger(__name__)

Convert = Callable[[list[Path], list[Path], Path, bool], None]


def tree_top(tree: Path) -> Path:
    """The list files of a tree that keeps them at its top (``<tree>/<split>.txt``)."""
    return tree


@dataclass(frozen=True)
class Preparer:
    """What one dataset fills in of :func:`prepare`.

    Attributes:
        name: the dataset in messages (``"VOC 2012"``).
        archives: the releases to fetch and unpack.
        targets: the finished trees, relative to the data root.
        convert: ``convert(releases, trees, root, allow_partial)`` writes each tree (the
            scratch folder of each target, in order) from the unpacked archives (one folder per
            archive, in order); ``allow_partial`` for the checks of the release it makes.
        sizes: the published size of each split.
        config: the ``configs/data/`` name that reads the prepared dataset.
        config_root: its ``data.root``, relative to the data root (``""``: the data root).
        lists: the folder of a tree's ``<split>.txt`` list files.
        needs: checks, before anything is fetched, what must be under the data root already.
    """

    name: str
    archives: tuple[Source, ...]
    targets: tuple[Path, ...]
    convert: Convert
    sizes: Mapping[str, int]
    config: str
    config_root: str
    lists: Callable[[Path], Path] = tree_top
    needs: Callable[[Path], object] | None = None

    def check(self, tree: Path, allow_partial: bool) -> None:
        """Assert the published size of every split of ``tree``."""
        check_splits(self.name, self.lists(tree), self.sizes, allow_partial)


def prepare(
    preparer: Preparer,
    root: Path,
    downloads: Path,
    mirror: str | None = None,
    allow_partial: bool = False,
) -> None:
    """Write the trees of ``preparer`` under ``root``: trees already there are checked (done, or
    an error naming the folder to delete); otherwise the archives are fetched into
    ``downloads`` (from ``mirror`` if given), unpacked, converted into scratch folders, checked
    for the published split sizes (``allow_partial`` accepts a subset) and moved into place."""
    if preparer.needs is not None:
        preparer.needs(root)
    targets = [root / target for target in preparer.targets]
    existing = [target for target in targets if target.is_dir()]
    for target in existing:
        check_existing(preparer, target, allow_partial)
    if existing == targets:
        log.info("%s: prepared already (delete to prepare again)", ", ".join(map(str, targets)))
        return
    archives = [fetch(source, downloads, mirror) for source in preparer.archives]
    root.mkdir(parents=True, exist_ok=True)
    with TemporaryDirectory(prefix=".unpack-", dir=root) as unpacked, ExitStack() as staging:
        releases = [extract(archive, Path(unpacked) / archive.name) for archive in archives]
        trees = [staging.enter_context(staged_folder(target)) for target in targets]
        preparer.convert(releases, trees, root, allow_partial)
        for tree in trees:
            preparer.check(tree, allow_partial)
        for target in existing:  # left by a run stopped between two moves; replaced as a set
            shutil.rmtree(target)


def check_existing(preparer: Preparer, tree: Path, allow_partial: bool) -> None:
    """Check a tree that is there already; an error says which folder to delete."""
    log.info("%s exists; checking it", tree)
    try:
        preparer.check(tree, allow_partial)
    except DataError as error:
        raise DataError(f"{error}; delete {tree} to prepare it again") from None


def move_contents(source: Path, destination: Path) -> None:
    """Move everything in ``source`` into the folder ``destination`` (renames, no copies)."""
    for entry in source.iterdir():
        entry.rename(destination / entry.name)


def take_folder(pattern: str, what: str) -> Convert:
    """The converter of a release used as it is: its one folder matching ``pattern`` (a glob
    in the first archive) becomes the tree."""

    def convert(releases: list[Path], trees: list[Path], root: Path, allow_partial: bool) -> None:
        move_contents(find_one(releases[0], pattern, what), trees[0])

    return convert


def write_list(path: Path, ids: Iterable[str]) -> None:
    """Write one id per line (atomically)."""
    text = "".join(f"{i}\n" for i in ids)
    atomic_write(path, lambda handle: handle.write(text.encode()))


def write_splits(tree: Path, splits: Mapping[str, Sequence[str]]) -> None:
    """Write ``<tree>/<split>.txt`` for every split."""
    for split, ids in splits.items():
        write_list(tree / f"{split}.txt", ids)


def add_pair(tree: Path, image: Path, label: np.ndarray) -> None:
    """Add an image (linked) and its label (a palette PNG of the same stem) to a tree in the
    folder layout (``images/``, ``masks/``)."""
    for folder in ("images", "masks"):
        (tree / folder).mkdir(exist_ok=True)
    save_label_png(label, VOC_COLOURS, tree / "masks" / f"{image.stem}.png")
    link_or_copy(image, tree / "images")


def read_ids(path: Path) -> list[str]:
    """The ids of a list file (first field of each non-empty line)."""
    if not path.is_file():
        raise DataError(f"list file {path} does not exist")
    return [
        line.split()[0]
        for line in path.read_text(encoding="utf-8-sig").splitlines()
        if line.strip()
    ]


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

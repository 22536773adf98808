"""Writing files and folders so that readers only ever see the old or the complete new content.

Every file a command writes (checkpoints, metrics, predictions, pictures) goes through
:func:`atomic_output`; an export, which is checked under its final name before it is kept and may
come with a companion file, through :func:`staged_output`; every folder built in one go (a
prepared or generated dataset) through :func:`staged_folder`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from parsenet.run_lock import process_alive

TEMPORARY_MARK = ".tmp-"


def temporary_name(path: Path) -> Path:
    """The hidden name beside ``path`` that this process writes (a file, or for
    :func:`staged_output` a folder) before renaming into place."""
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that needs a file name (an exporter,
    an image library); when the block ends it is flushed to disk and renamed into place. On
    failure the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    try:
        with naming_errors(path, temporary):
            yield temporary
            replace_durably(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def naming_errors(path: Path, *aliases: Path) -> Iterator[None]:
    """An :class:`OSError` of the block that names no file (a full disk: torch and Pillow write
    through handles) or one of ``aliases`` (the temporary written first) is raised again naming
    ``path``, so that its message says where the write failed."""
    try:
        yield
    except OSError as error:
        named = error.filename is not None and str(error.filename) not in map(str, aliases)
        if error.errno is None or named:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def replace_durably(source: Path, target: Path) -> None:
    """Flush ``source`` to disk, then rename it to ``target`` (replacing what was there)."""
    with open(source, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(source, target)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` on a binary file handle whose content replaces ``path`` atomically
    (see :func:`atomic_output`)."""
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        write(handle)
    return Path(path)


@contextmanager
def staged_output(path: str | Path, companions: Sequence[str] = ()) -> Iterator[Path]:
    """Yield ``path``'s own name inside a fresh hidden folder beside it
    (``.<name>.tmp-<pid>/<name>``), for a writer that may leave companion files named
    ``<name><suffix>`` (an ONNX weights file) and whose output is checked under its final name
    before it is kept.

    When the block ends, the companions and then the file are renamed into place, and a companion
    of an earlier file at ``path`` that this write did not produce is removed. On failure or
    Ctrl-C nothing at ``path`` changes. The folder is always removed; folders left by killed
    processes are swept first (see :func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    folder = temporary_name(path)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
        staged = folder / path.name
        with naming_errors(path, staged):
            yield staged
            move_into_place(staged, path, companions)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def move_into_place(staged: Path, path: Path, companions: Sequence[str]) -> None:
    """Rename ``staged``'s companions (``<name><suffix>`` for each of ``companions``) and then
    ``staged`` itself beside ``path`` under ``path``'s name; delete the companions of ``path``
    that ``staged`` does not have."""
    pairs = [
        (staged.with_name(staged.name + end), path.with_name(path.name + end)) for end in companions
    ]
    written = [(source, target) for source, target in pairs if source.exists()]
    for source, target in [*written, (staged, path)]:
        replace_durably(source, target)
    for source, target in pairs:
        if (source, target) not in written:
            target.unlink(missing_ok=True)


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """A scratch folder beside ``target`` that becomes ``target`` only if the block finishes.

    Converters and generators write into it, so an interrupted or failed run leaves no
    half-written tree behind (the scratch folder is removed; a rerun starts clean).
    """
    target = Path(target)
    scratch = target.with_name(f".{target.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    scratch.rename(target)


def writer_gone(temporary: Path) -> bool:
    """Whether the process that named ``temporary`` (``….tmp-<pid>``) is this one or no longer
    runs: only then is the file left over rather than being written."""
    pid = temporary.name.rpartition(TEMPORARY_MARK)[2]
    if not pid.isdigit():
        return False
    return int(pid) == os.getpid() or not process_alive(int(pid))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files of :func:`atomic_output` and folders of :func:`staged_output`
    left in ``folder`` when their process was killed mid-write (they are never what a reader
    opens); those that a live process is still writing are left alone. Returns what was
    removed."""
    pattern = f".*{TEMPORARY_MARK}*"
    found = sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []
    stale = [path for path in found if writer_gone(path)]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale

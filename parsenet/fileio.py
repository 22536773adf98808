"""Writing files and folders so that readers only ever see the old or the complete new content.

Every file a command writes (checkpoints, metrics, predictions, pictures, exports) goes through
:func:`atomic_output`; every folder built in one go (a prepared or generated dataset) through
:func:`staged_folder`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from parsenet.run_lock import process_alive

TEMPORARY_MARK = ".tmp-"


def temporary_name(path: Path) -> Path:
    """The hidden name beside ``path`` that this process writes before renaming into place."""
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
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` on a binary file handle whose content replaces ``path`` atomically
    (see :func:`atomic_output`)."""
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        write(handle)
    return Path(path)


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
    """Delete temporary files that :func:`atomic_output` left in ``folder`` when its process was
    killed mid-write (they are never the file a reader opens); files that a live process is
    still writing are left alone. Returns what was removed."""
    pattern = f".*{TEMPORARY_MARK}*"
    found = sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []
    stale = [path for path in found if writer_gone(path)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale

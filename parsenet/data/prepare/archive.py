"""Unpacking release archives (tar, tar.gz, zip) without letting a member escape its folder."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from parsenet.errors import DataError


def extract(archive: Path, destination: Path) -> Path:
    """Unpack ``archive`` into ``destination`` (created); returns ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.namelist():
                    check_inside(destination, member, archive)
                bundle.extractall(destination)
        else:
            with tarfile.open(archive) as bundle:
                for member in bundle.getnames():
                    check_inside(destination, member, archive)
                # The "data" filter (Python ≥ 3.10.12 / 3.11.4) also refuses links and devices.
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                bundle.extractall(destination, **safe)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise DataError(
            f"cannot unpack {archive} ({error}); delete it and run the command again"
        ) from None
    return destination


def check_inside(destination: Path, member: str, archive: Path) -> None:
    """Refuse archive members with absolute paths or ``..`` that would land outside."""
    target = (destination / member).resolve()
    if not target.is_relative_to(destination.resolve()):
        raise DataError(f"{archive} holds {member!r}, outside the folder it unpacks into")


def find_one(folder: Path, pattern: str, what: str) -> Path:
    """The single path under ``folder`` matching the glob ``pattern``; a clear error otherwise."""
    matches = sorted(folder.glob(pattern))
    if len(matches) != 1:
        found = "nothing" if not matches else f"{len(matches)} matches"
        raise DataError(f"expected one {what} ({pattern}) in {folder}, found {found}")
    return matches[0]

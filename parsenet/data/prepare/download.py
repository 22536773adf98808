"""Fetching release archives: resumable HTTP downloads, checksums, and an offline path.

An archive is looked for in the downloads folder first (so a user without internet can put it
there by hand); otherwise it is downloaded into ``<name>.part`` — continued with an HTTP Range
request if an earlier download stopped — checked, and only then renamed to ``<name>``.
Releases without a published checksum are recorded on first download (``<name>.sha256``) and
checked against that record afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from parsenet.errors import DataError
from parsenet.fileio import atomic_write

log = logging.getLogger(__name__)

CHUNK = 1 << 20
HTTP_PARTIAL = 206
HTTP_RANGE_NOT_SATISFIABLE = 416


@dataclass(frozen=True)
class Source:
    """A released file: where it is published and how to check it.

    Attributes:
        url: the public address.
        checksum: ``"md5:<hex>"``, ``"sha1:<hex>"`` or ``"sha256:<hex>"``; ``None`` where the
            publisher gives none (the first download's SHA-256 is recorded instead).
        name: the file name to keep it under (default: the last component of the URL).
    """

    url: str
    checksum: str | None = None
    name: str | None = None

    @property
    def filename(self) -> str:
        """The file's name in the downloads folder and on a mirror."""
        return self.name or self.url.rstrip("/").rsplit("/", 1)[-1]


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def expected_checksum(source: Source, path: Path) -> str | None:
    """The published checksum, else the one recorded beside ``path`` at its first download."""
    if source.checksum:
        return source.checksum
    record = path.with_name(path.name + ".sha256")
    return f"sha256:{record.read_text().split()[0]}" if record.is_file() else None


def checksum_matches(path: Path, checksum: str) -> bool:
    """Whether ``path`` has the digest ``algorithm:hex``."""
    algorithm, _, value = checksum.partition(":")
    return file_digest(path, algorithm) == value.lower()


def download(url: str, part: Path) -> None:
    """Download ``url`` into ``part``, continuing after the bytes already there."""
    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == HTTP_RANGE_NOT_SATISFIABLE and start:
            return  # the earlier download was already complete
        raise DataError(f"cannot download {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DataError(f"cannot download {url} ({reason})") from None
    with response:
        resumed = start and getattr(response, "status", None) == HTTP_PARTIAL
        if start and not resumed:
            log.info("%s does not resume downloads; starting %s again", url, part.name)
        length = response.headers.get("Content-Length")
        total = int(length) + (start if resumed else 0) if length else None
        with (
            part.open("ab" if resumed else "wb") as handle,
            tqdm(
                total=total,
                initial=start if resumed else 0,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=None,
            ) as progress,
        ):
            received = 0
            try:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
            except OSError as error:
                raise DataError(
                    f"the download of {url} stopped ({error}); run the command again to continue"
                ) from None
    # A server that closes the connection early gives a short read, not an error.
    if length and received < int(length):
        raise DataError(
            f"the download of {url} stopped after {received:,} of {int(length):,} bytes; run "
            "the command again to continue it"
        )


def fetch(source: Source, downloads: Path, mirror: str | None = None) -> Path:
    """The checked archive of ``source`` in ``downloads``, downloaded if it is not there.

    Args:
        source: what to fetch.
        downloads: folder for archives (a file put there by hand is used as it is, if it passes
            the checksum).
        mirror: a base URL (``https://…/`` or ``file:///…/``) to fetch the file name from
            instead of the publisher's address.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    path = downloads / source.filename
    if path.is_file():
        expected = expected_checksum(source, path)
        if expected and not checksum_matches(path, expected):
            raise DataError(
                f"{path} does not match its checksum {expected}; it is damaged or another "
                "file: delete it and run this command again"
            )
        return path
    url = f"{mirror.rstrip('/')}/{source.filename}" if mirror else source.url
    part = path.with_name(path.name + ".part")
    try:
        download(url, part)
    except DataError as error:
        raise DataError(
            f"{error}; without internet, download {source.url} elsewhere and put it at "
            f"{path}, then run this command again"
        ) from None
    check_download(source, part, path)
    return part.rename(path)


def check_download(source: Source, part: Path, path: Path) -> None:
    """Check a finished download against the published checksum, or record its SHA-256."""
    if source.checksum is None:
        digest = file_digest(part, "sha256")
        record = f"{digest}  {path.name}\n".encode()
        atomic_write(path.with_name(path.name + ".sha256"), lambda handle: handle.write(record))
        log.warning(
            "%s has no published checksum; recorded its sha256 %s for later runs",
            path.name,
            digest,
        )
    elif not checksum_matches(part, source.checksum):
        part.unlink()
        raise DataError(
            f"the download of {source.url} does not match its checksum {source.checksum} and "
            "was deleted; run the command again (or check the mirror)"
        )

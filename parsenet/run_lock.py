"""One process per run folder: a lock file naming its owner (pid, host, start time)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from parsenet.errors import ParsenetError

log = logging.getLogger(__name__)
LOCK_NAME = ".parsenet.lock"


class RunFolderBusy(ParsenetError):
    """Another live process holds the run folder."""


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def this_process() -> dict[str, object]:
    """The owner record of this process."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


class RunFolderLock:
    """Holds ``<folder>/.parsenet.lock`` while a command writes into ``folder``.

    A second process that wants the folder stops with one line naming the owner. A lock left by
    a process that died (same host, pid gone) is taken over with a warning. Re-entering in the
    process that holds it is allowed (the command and the library both take it).

    Args:
        folder: the run folder (created if missing).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.owned = False

    def owner(self) -> dict[str, object] | None:
        """The record in the lock file, or None when there is none (or it is unreadable)."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunFolderLock:
        """Take the lock, or raise :class:`RunFolderBusy`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        me = this_process()
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner() or {}
                if owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                    return self  # this process holds it already
                if owner.get("host") == me["host"] and not process_alive(int(owner["pid"])):
                    log.warning(
                        "run folder %s: taking over the lock of process %s, which is gone",
                        self.folder,
                        owner["pid"],
                    )
                    self.path.unlink(missing_ok=True)
                    continue
                if not owner:  # being written right now by its owner
                    time.sleep(0.1)
                    continue
                started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"]))
                raise RunFolderBusy(
                    f"run folder {self.folder} is in use by process {owner['pid']} on "
                    f"{owner['host']} (since {started}); wait for it to finish, or choose "
                    "another folder (hydra.run.dir=PATH)"
                ) from None
            with os.fdopen(descriptor, "w") as handle:
                json.dump(me, handle)
            self.owned = True
            return self
        raise RunFolderBusy(f"run folder {self.folder}: cannot take its lock {self.path}")

    def release(self) -> None:
        """Remove the lock file if this object took it."""
        if self.owned:
            self.path.unlink(missing_ok=True)
            self.owned = False

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

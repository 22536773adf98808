"""The run folder of one command: chosen before Hydra starts, checked, locked, and left as it
was when the command fails."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from parsenet.errors import ConfigError
from parsenet.run_lock import RunFolderLock

HYDRA_FILES = ".hydra"
HYDRA_CONFIGS = ("config.yaml", "hydra.yaml", "overrides.yaml")  # what Hydra writes there


def check_writable(folder: Path) -> None:
    """Raise :class:`ConfigError` when ``folder`` cannot be a run folder: it is a file, or its
    nearest existing ancestor is not a writable folder."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"run folder {folder} is a file; choose another folder (hydra.run.dir=PATH)"
        )
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(
            f"cannot create run folder {folder}: {ancestor} is a file; choose another folder "
            "(hydra.run.dir=PATH)"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot create run folder {folder}: {ancestor} is not writable; choose another "
            "folder (hydra.run.dir=PATH)"
        )


def refuse_links(paths: list[Path]) -> None:
    """Raise :class:`ConfigError` when one of the ``paths`` Hydra writes is a symbolic link:
    Hydra would write through it into its target."""
    for path in paths:
        if path.is_symlink():
            raise ConfigError(
                f"{path} is a symbolic link (to {os.readlink(path)}), which the run would write "
                "through; remove it or choose another folder (hydra.run.dir=PATH)"
            )


class RunFolder:
    """A command's run folder from before Hydra writes into it until the command ends.

    ``open()`` checks that it can be written and that what Hydra writes there (its log and
    ``.hydra/``) is no symbolic link, takes its lock (rank 0 only) and remembers whether it
    existed and what its ``.hydra/`` and log held; ``failed()`` undoes what the failed command
    did: a folder it created without a checkpoint in it is removed, an existing one gets its
    ``.hydra/`` back and, without a checkpoint in it, its log as it was.

    Args:
        path: the folder.
        log_name: the file Hydra logs to there (``<hydra.job.name>.log``).
        owner: False in processes other than rank 0 under torchrun (which neither lock nor
            clean up).
    """

    def __init__(self, path: Path, log_name: str, owner: bool = True) -> None:
        self.path = path
        self.log = path / log_name
        self.lock = RunFolderLock(path) if owner else None
        self.existed = path.exists()
        self.completed = False  # set when the command's work finished
        self.hydra_files: dict[Path, bytes] = {}
        self.log_size: int | None = None  # None: there was no log

    def open(self) -> RunFolder:
        """Check, lock and remember the folder (see the class)."""
        check_writable(self.path)
        hydra = self.path / HYDRA_FILES
        refuse_links([self.log, hydra, *(hydra / name for name in HYDRA_CONFIGS)])
        if self.lock is not None:
            self.lock.acquire()
        if hydra.is_dir():
            self.hydra_files = {
                file: file.read_bytes() for file in hydra.iterdir() if file.is_file()
            }
        if self.log.is_file():
            self.log_size = self.log.stat().st_size
        return self

    def failed(self) -> None:
        """Leave the folder as the command found it (see the class)."""
        if self.lock is None or not self.path.is_dir():
            return
        has_checkpoint = any(self.path.glob("checkpoints/*.pt"))
        if not self.existed and not has_checkpoint:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        hydra = self.path / HYDRA_FILES
        if self.existed:
            shutil.rmtree(hydra, ignore_errors=True)
            for file, content in self.hydra_files.items():
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(content)
            if not has_checkpoint:
                self.restore_log()

    def restore_log(self) -> None:
        """Take back what this command appended to the log (the whole log if it made it)."""
        if self.log_size is None:
            self.log.unlink(missing_ok=True)
        elif self.log.is_file():
            os.truncate(self.log, self.log_size)

    def close(self) -> None:
        """Release the lock."""
        if self.lock is not None:
            self.lock.release()

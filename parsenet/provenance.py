"""Which code produced a result: the git commit of the checkout parsenet runs from, if any."""

from __future__ import annotations

import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def git(*arguments: str) -> str | None:
    """The output of ``git -C <package> ARGUMENTS`` (stripped), or None when git is missing,
    fails or takes more than 5 s."""
    try:
        done = subprocess.run(
            ["git", "-C", str(PACKAGE), *arguments],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_commit() -> str | None:
    """The commit of the git checkout this package is imported from (``<hash>``, with
    `` + local changes`` when its tracked files differ from it), or None: not run from a
    checkout (an installed wheel, even one inside another repository's folder), or no git."""
    top = git("rev-parse", "--show-toplevel")
    if top is None or (Path(top) / "parsenet").resolve() != PACKAGE:
        return None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit} + local changes" if changed else commit

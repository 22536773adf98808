"""Bad samples under ``data.on_bad_sample=skip``: logged once, counted, reported — never hidden.

With ``skip``, a dataset returns ``{"skipped": [message]}`` instead of a pair it cannot read;
training replaces such a sample with the next readable one (so batches keep their size and every
image stays with its own label), evaluation leaves it out. The messages travel with the batch
to the main process, where a :class:`BadSampleLog` logs each bad file the first time it is seen
and counts every skip.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger(__name__)

ON_BAD_SAMPLE = ("raise", "skip")


class BadSampleLog:
    """Counts skipped samples and logs each distinct bad file once."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, messages: Iterable[str]) -> None:
        """Count the skips of one batch; log the files not seen before."""
        for message in messages:
            if message not in self.counts:
                log.warning("skipped a bad sample (data.on_bad_sample=skip): %s", message)
            self.counts[message] += 1

    @property
    def total(self) -> int:
        """Skips so far (a file skipped in two epochs counts twice)."""
        return sum(self.counts.values())

    def summary(self) -> dict:
        """``{"skipped": total, "files": [messages]}`` for logs and ``metrics.json``."""
        return {"skipped": self.total, "files": sorted(self.counts)}

    def merge(self, counts: dict[str, int]) -> None:
        """Add another log's counts (``{message: count}``, e.g. another process's or a
        checkpoint's) without logging them again."""
        self.counts.update(counts)

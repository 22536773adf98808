"""Where training numbers go: TensorBoard scalars and a JSON-lines log, from rank 0 only."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from parsenet.fileio import naming_errors

LINES_NAME = "train_log.jsonl"


class TrainingLog:
    """TensorBoard event files in ``run_dir/tensorboard`` and one JSON object per line in
    ``run_dir/train_log.jsonl``. Both are opened at the first record, so a run that fails before
    logging anything leaves neither behind; in processes other than rank 0 nothing is written.

    Args:
        run_dir: the run folder.
        enabled: False in processes other than rank 0.
    """

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self._writer: SummaryWriter | None = None
        self._lines = None

    @property
    def writer(self) -> SummaryWriter:
        """The TensorBoard writer (created on first use)."""
        if self._writer is None:
            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            self._lines = open(self.run_dir / LINES_NAME, "a")  # noqa: SIM115
        return self._writer

    def config(self, cfg: dict[str, Any]) -> None:
        """Record the resolved config once: as text in TensorBoard and the log's first line."""
        if not self.enabled:
            return
        self.writer.add_text("config", "```\n" + json.dumps(cfg, indent=2) + "\n```")
        self._write_line({"config": cfg})

    def scalars(self, iteration: int, values: dict[str, float], kind: str = "train") -> None:
        """Add ``values`` (names like ``train/loss``) at ``iteration`` to both logs."""
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, value, iteration)
        self._write_line({"kind": kind, "iteration": iteration, **values})

    def image(self, tag: str, array: np.ndarray, iteration: int) -> None:
        """An H×W×3 uint8 picture in TensorBoard."""
        if self.enabled:
            self.writer.add_image(tag, array, iteration, dataformats="HWC")

    def _write_line(self, record: dict[str, Any]) -> None:
        self.writer  # noqa: B018 — opens both files
        with naming_errors(self.run_dir / LINES_NAME):
            self._lines.write(json.dumps(record) + "\n")
            self._lines.flush()

    def close(self) -> None:
        """Flush and close both files (a later record opens them again)."""
        if self._writer is not None:
            self._writer.close()
            self._lines.close()
            self._writer = self._lines = None


def step_scalars(window: list[dict[str, float]], images_per_step: int) -> dict[str, float]:
    """TensorBoard scalars of the steps since the last log line: the last loss and gradient
    norm, mean step and data time, images per second."""
    steps = len(window)
    step_seconds = sum(step["step_seconds"] for step in window)
    return {
        "train/loss": window[-1]["loss"],
        "train/grad_norm": window[-1]["grad_norm"],
        "train/step_seconds": step_seconds / steps,
        "train/data_seconds": sum(step["data_seconds"] for step in window) / steps,
        "train/images_per_s": images_per_step * steps / max(step_seconds, 1e-9),
    }


def format_duration(seconds: float) -> str:
    """``seconds`` (≥ 0) as ``H:MM:SS``, with the days in front from 24 hours on
    (``1 day, 2:03:04``, ``3 days, 0:00:00``): :class:`datetime.timedelta`'s form, the fraction
    of a second dropped."""
    return str(timedelta(seconds=int(seconds)))


def progress_line(values: dict[str, float], iteration: int, max_iters: int, base_lr: float) -> str:
    """The console line of one log interval: iteration, loss, learning rate, speed, ETA."""
    eta = format_duration((max_iters - iteration) * values["train/step_seconds"])
    return (
        f"iter {iteration}/{max_iters}: loss {values['train/loss']:.4f}, base lr {base_lr:.3g}, "
        f"{values['train/images_per_s']:.1f} img/s, ETA {eta}"
    )

"""Training from Python: :func:`train`."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from parsenet.engine.runtime.distributed import DistContext
from parsenet.engine.training.trainer import Trainer
from parsenet.run_lock import RunFolderLock


def train(
    cfg: dict[str, Any], run_dir: str | Path, context: DistContext | None = None
) -> dict[str, Any]:
    """Train a model as ``cfg`` describes, evaluate it on the validation split and return the
    final ``metrics.json`` record (or, after SIGINT/SIGTERM, ``{"stopped": …, "iteration": …,
    "checkpoint": …}``).

    Args:
        cfg: a resolved train config, e.g.
            ``parsenet.config.compose("train", ["model=fcn", "data=voc", "data.root=/datasets"])``.
        run_dir: where checkpoints, logs, ``metrics.json`` and overlays go (see README, Train).
        context: this process's place under torchrun (default: one process on ``cfg.device``).

    Raises:
        RunFolderBusy: another live process is writing into ``run_dir``.
    """
    main_process = context is None or context.is_main
    with RunFolderLock(run_dir) if main_process else nullcontext():  # one process per folder
        return Trainer(cfg, run_dir, context).run()

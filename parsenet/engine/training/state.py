"""A training run's state in checkpoints: what is saved, how it is restored, and the rotation of
``last.pt``, ``best.pt`` and the ``iter_NNNNNN.pt`` snapshots."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from parsenet.data.bad_samples import BadSampleLog
from parsenet.data.base import SegmentationDataset
from parsenet.engine.runtime.checkpoint import load_checkpoint, save_checkpoint
from parsenet.engine.runtime.distributed import DistContext, gather_objects
from parsenet.engine.runtime.precision import Precision
from parsenet.engine.runtime.process import rng_state, set_rng_state
from parsenet.engine.scoring.split import gather_bad_samples
from parsenet.engine.training.faults import NonFiniteGuard
from parsenet.errors import CheckpointError
from parsenet.fileio import remove_stale_temporaries

log = logging.getLogger(__name__)
RESUME_SECTIONS = ("model", "optim", "lr_mult")  # what the weights and optimiser state must fit
SHOWN_DIFFERENCES = 4


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], sections: tuple[str, ...]
) -> list[str]:
    """``key: saved → current`` for the settings under ``sections`` that differ (the first few,
    then how many more)."""

    def leaves(node: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(node, dict):
            return {prefix: node}
        found: dict[str, Any] = {}
        for key, value in node.items():
            found.update(leaves(value, f"{prefix}.{key}"))
        return found

    old, new = {}, {}
    for section in sections:
        old.update(leaves(saved.get(section, {}), section))
        new.update(leaves(current.get(section, {}), section))
    changed = [
        f"{key}: {old.get(key, 'unset')} → {new.get(key, 'unset')}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    more = len(changed) - SHOWN_DIFFERENCES
    return changed[:SHOWN_DIFFERENCES] + ([f"{more} more"] if more > 0 else [])


def training_set_id(dataset: SegmentationDataset, name: str, split: str) -> dict[str, Any]:
    """What identifies a training split in a checkpoint: its dataset ``name``, ``split``, size
    and a digest of its sample names in order (not of their folder: a moved copy keeps it)."""
    names = "\n".join(dataset.sample_name(index) for index in range(len(dataset)))
    digest = hashlib.sha256(names.encode()).hexdigest()
    return {"name": name, "split": split, "images": len(dataset), "digest": digest}


def check_training_set(path: Path, saved: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Raise a :class:`CheckpointError` when the checkpoint at ``path`` was trained on another
    training split than this run's (checkpoints from before the record was kept pass)."""
    if saved is None or saved["digest"] == current["digest"]:
        return

    def described(train_set: dict[str, Any]) -> str:
        return f"{train_set['name']} {train_set['split']}, {train_set['images']} images"

    raise CheckpointError(
        f"checkpoint {path} was trained on another training set ({described(saved)}; this "
        f"run: {described(current)}); resume with the data it was trained on, or start a new "
        "run in another folder without train.resume"
    )


@dataclass
class TrainingState:
    """Everything of a run that changes while it trains.

    Attributes:
        model, optimizer, scheduler: the plain module and what updates it.
        precision: autocast and the fp16 gradient scaler.
        guard: the count of non-finite steps.
        bad_samples: skipped unreadable pairs (``data.on_bad_sample=skip``).
        iteration: optimiser steps taken; best_miou: the best validation mIoU so far.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    guard: NonFiniteGuard
    bad_samples: BadSampleLog
    iteration: int = 0
    best_miou: float = float("-inf")

    def capture(
        self, samples_seen: int, cfg: dict[str, Any], dataset: dict, context: DistContext
    ) -> dict[str, Any]:
        """The checkpoint's content. Every process calls it (the random states and skipped
        samples of all are gathered)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "iteration": self.iteration,
            "best_miou": self.best_miou,
            "nonfinite": self.guard.state_dict(),
            "bad_samples": dict(gather_bad_samples(self.bad_samples, context).counts),
            "rng": gather_objects(rng_state(), context),  # one per process
            "samples_seen": samples_seen,
            "config": cfg,
            "dataset": dataset,
        }

    def restore(
        self, path: Path, context: DistContext, cfg: dict[str, Any], train_set: dict[str, Any]
    ) -> None:
        """Continue from a checkpoint: weights, optimiser, schedule, scaler, counters, random
        states (the data order follows from the iteration). ``cfg`` is this run's config: when
        the checkpoint does not fit, the message names the settings that differ; ``train_set``
        is this run's training split (see :func:`training_set_id`), which must be the
        checkpoint's."""
        checkpoint = load_checkpoint(path)
        if "optimizer" not in checkpoint or "rng" not in checkpoint:
            raise CheckpointError(
                f"checkpoint {path} holds weights only (e.g. a converted Caffe model), not a "
                "training state to resume; evaluate or predict with it, or start a new run"
            )
        check_training_set(path, checkpoint.get("train_set"), train_set)
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            changed = config_differences(checkpoint["config"], cfg, RESUME_SECTIONS)
            reason = "; ".join(changed) or str(error).strip().splitlines()[0]
            raise CheckpointError(
                f"checkpoint {path} does not fit this model or optimiser ({reason}); resume with "
                "the settings it was trained with"
            ) from None
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.precision.scaler.load_state_dict(checkpoint["scaler"])
        self.guard.load_state_dict(checkpoint["nonfinite"])
        if context.is_main:  # counts of all processes, kept once
            self.bad_samples.merge(checkpoint.get("bad_samples", {}))
        self.iteration = checkpoint["iteration"]
        self.best_miou = checkpoint["best_miou"]
        states = checkpoint["rng"]
        if len(states) != context.world_size:
            log.warning(
                "%s was written by %d process(es), this run has %d: random streams (dropout) "
                "start from process 0's, so the continuation is not bit-exact",
                path,
                len(states),
                context.world_size,
            )
        set_rng_state(states[context.rank % len(states)])
        log.info("resumed from %s at iteration %d", path, self.iteration)


class CheckpointFolder:
    """``run_dir/checkpoints``: named checkpoints and the most recent snapshots, written by the
    main process only.

    Args:
        folder: where the checkpoints go.
        keep_snapshots: how many ``iter_NNNNNN.pt`` to keep (0: none).
        writer: False in processes other than rank 0.
    """

    def __init__(self, folder: Path, keep_snapshots: int, writer: bool) -> None:
        self.folder = folder
        self.keep_snapshots = keep_snapshots
        self.writer = writer
        if writer:
            remove_stale_temporaries(folder)  # from a kill mid-save

    def save(self, name: str, state: dict[str, Any]) -> Path:
        """Write ``<folder>/<name>`` atomically (rank 0); returns its path in every process."""
        path = self.folder / name
        return save_checkpoint(path, state) if self.writer else path

    def snapshot(self, iteration: int, state: dict[str, Any]) -> None:
        """Write ``iter_NNNNNN.pt`` and delete all but the newest ``keep_snapshots``."""
        if not self.keep_snapshots or not self.writer:
            return
        self.save(f"iter_{iteration:06d}.pt", state)
        for old in sorted(self.folder.glob("iter_*.pt"))[: -self.keep_snapshots]:
            old.unlink()

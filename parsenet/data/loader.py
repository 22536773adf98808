"""DataLoader pieces: worker setup, batch collation, and the evaluation loader."""

from __future__ import annotations

import os
import random
import signal

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from parsenet.errors import ConfigError, DataError

AUTO_WORKERS_MAX = 12  # ≈ 300 images/s each at 320 (docs/benchmarks.md): thousands in all


def loader_workers(value: int | str, key: str = "data.num_workers") -> int:
    """The number of loader processes ``data.num_workers`` asks for: a whole number as it is, or
    ``auto``: the CPUs this process may use, shared among the processes of its node (torchrun's
    ``LOCAL_WORLD_SIZE``), less two for the training process and its pin-memory thread, between
    1 and 12 (16 CPUs and one GPU: 12; 2 CPUs: 1). Anything else is a :class:`ConfigError`
    naming ``key``. The one place where ``auto`` is resolved."""
    if value == "auto":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        per_process = (cpus or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        return max(1, min(AUTO_WORKERS_MAX, per_process - 2))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}={value!r} must be a whole number ≥ 0, or auto")
    return value


def worker_init(worker_id: int) -> None:
    """Give each worker its own Python and NumPy seeds, keep OpenCV from starting threads inside
    workers, and leave Ctrl-C to the main process (which finishes its step and saves before
    stopping). Augmentation is reseeded per sample (see ``parsenet.data.sampling``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def collate_samples(samples: list[dict]) -> dict:
    """Stack samples into a batch; images of different sizes are a clear error, not a crash.

    The ``skipped`` messages of the samples (``data.on_bad_sample=skip``) are gathered into the
    batch's ``skipped`` list; samples that are only a skip are left out, and a batch of nothing
    but skips has no ``image``.
    """
    skipped = [message for sample in samples for message in sample.get("skipped", [])]
    samples = [
        {key: value for key, value in sample.items() if key != "skipped"}
        for sample in samples
        if "image" in sample
    ]
    if not samples:
        return {"skipped": skipped}
    sizes = sorted({tuple(sample["image"].shape[-2:]) for sample in samples})
    if len(sizes) > 1:
        shown = ", ".join(f"{height}×{width}" for height, width in sizes)
        raise DataError(
            f"a batch mixes image sizes (H×W {shown}); set data.augment.crop_size to crop them "
            "to one size, or use train.batch_size=1"
        )
    return {**default_collate(samples), "skipped": skipped}


def make_loader(
    dataset: Dataset, batch_size: int, num_workers: int | str, pin_memory: bool = False
) -> DataLoader:
    """An evaluation DataLoader: every sample once, in order, with persistent workers
    (``num_workers``: a count or ``auto``, see :func:`loader_workers`).

    The loader has its own generator (which also seeds the workers), so creating or iterating it
    never advances the global torch RNG: evaluating during training leaves training unchanged.
    (Training uses :class:`parsenet.data.sampling.ResumableSampler`.)
    """
    num_workers = loader_workers(num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=worker_init,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),
        collate_fn=collate_samples,
    )

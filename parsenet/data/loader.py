"""DataLoaders for training (seeded shuffling, endless) and evaluation."""

from __future__ import annotations

import random
import signal

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, default_collate, get_worker_info

from parsenet.errors import DataError


def worker_init(worker_id: int) -> None:
    """Give each worker its own seeds (Python, NumPy and the dataset's augmentation), keep
    OpenCV from starting threads inside workers, and leave Ctrl-C to the main process (which
    finishes its step and saves before stopping)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    dataset = get_worker_info().dataset
    transform = getattr(getattr(dataset, "dataset", dataset), "transform", None)
    if hasattr(transform, "reseed"):
        transform.reseed(seed)


def collate_samples(samples: list[dict]) -> dict:
    """Stack samples into a batch; images of different sizes are a clear error, not a crash."""
    sizes = sorted({tuple(sample["image"].shape[-2:]) for sample in samples})
    if len(sizes) > 1:
        shown = ", ".join(f"{height}×{width}" for height, width in sizes)
        raise DataError(
            f"a batch mixes image sizes (H×W {shown}); set data.augment.crop_size to crop them "
            "to one size, or use train.batch_size=1"
        )
    return default_collate(samples)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader with seeded shuffling and persistent workers.

    With ``shuffle`` the order is drawn from a generator seeded with ``seed`` and incomplete last
    batches are dropped (training); without it every sample is visited once in order (evaluation).
    The loader's own generator also seeds the workers, so creating a loader or iterating over it
    never advances the global torch RNG (evaluating during training leaves training unchanged).
    """
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, generator=generator) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=shuffle,
        pin_memory=pin_memory,
        worker_init_fn=worker_init,
        persistent_workers=num_workers > 0,
        generator=generator,
        collate_fn=collate_samples,
    )

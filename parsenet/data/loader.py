"""DataLoaders for training (seeded shuffling, endless) and evaluation."""

from __future__ import annotations

import random
from collections.abc import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


def _init_worker(worker_id: int) -> None:
    """Give each worker its own seeds and keep OpenCV from starting threads inside workers."""
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


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
    """
    sampler = (
        RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)) if shuffle else None
    )
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        drop_last=shuffle, pin_memory=pin_memory, worker_init_fn=_init_worker,
        persistent_workers=num_workers > 0,
    )


def infinite_batches(loader: DataLoader) -> Iterator[dict]:
    """Iterate over ``loader`` forever, one epoch after another."""
    while True:
        yield from loader

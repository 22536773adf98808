"""The training order: seeded, endless, shardable across processes, resumable at any sample.

Every epoch is a permutation drawn from ``(seed, epoch)``; with W processes each takes every W-th
sample of it (after trimming the epoch to whole global batches), so W processes with batch B see,
step by step, the same images as one process with batch W·B. Each sample also carries its own
augmentation seed, derived from ``(seed, epoch, position in the epoch)``: the crops and flips of a
sample do not depend on the number of loader workers or processes, nor on where a run was
resumed. The state is one number, the samples this process has consumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from parsenet.errors import DataError


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of ``epoch``'s permutation."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class ResumableSampler(Sampler):
    """Yields ``(dataset index, augmentation seed)`` forever, starting after ``start`` samples.

    Args:
        size: number of samples in the dataset.
        global_batch: images per step over all processes (batch size × processes); each epoch
            is trimmed to a multiple of it, so every process gets the same number of samples.
        seed: seed of the permutations and the augmentation seeds.
        rank, world_size: this process's share (``rank``-th of every ``world_size`` samples).
        start: samples this process has already consumed (from a checkpoint).
    """

    def __init__(
        self,
        size: int,
        global_batch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        if size < global_batch:
            raise ValueError(f"{size} samples cannot fill a global batch of {global_batch}")
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch_length = size // global_batch * global_batch  # over all processes
        self.per_process = self.epoch_length // world_size
        self.start = start

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of ``epoch`` (the same in every process)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)[: self.epoch_length]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_process)
        while True:
            order = self.permutation(epoch)
            for local in range(offset, self.per_process):
                position = local * self.world_size + self.rank
                yield int(order[position]), sample_seed(self.seed, epoch, position)
            epoch, offset = epoch + 1, 0


class SeededSamples(Dataset):
    """A dataset indexed by ``(index, seed)``: reseeds its augmentation, then loads the sample.

    A sample the dataset skipped (``data.on_bad_sample=skip``) is replaced by the next readable
    one, which carries the skipped messages along, so training batches keep their size.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        transform = getattr(self.dataset, "transform", None)
        skipped: list[str] = []
        for offset in range(len(self.dataset)):
            if hasattr(transform, "reseed"):
                transform.reseed(seed)
            sample = self.dataset[(index + offset) % len(self.dataset)]
            skipped += sample.pop("skipped", [])
            if "image" in sample:
                return {**sample, "skipped": skipped} if skipped else sample
        raise DataError(f"no sample of the dataset can be read; the first error: {skipped[0]}")

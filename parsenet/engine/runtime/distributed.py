"""Running under ``torchrun``: process group, device per process, and the few collectives used.

``torchrun --nproc_per_node=N -m parsenet.cli.train …`` starts N processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` set; :func:`init_distributed` joins them (NCCL on GPUs, gloo on
CPUs). Without those variables everything here is a no-op for a single process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from parsenet.engine.runtime.process import resolve_device
from parsenet.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes logs, checkpoints and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when the environment describes more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_name: str) -> DistContext:
    """Join the process group when started by torchrun, and pick this process's device.

    With CUDA each process takes ``cuda:LOCAL_RANK`` and NCCL; on CPUs gloo.
    """
    if not launched_by_torchrun():
        return DistContext(device=resolve_device(device_name))
    device = resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                "lower --nproc_per_node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def shard_indices(size: int, context: DistContext) -> range:
    """This process's share of ``size`` items: every ``world_size``-th from its rank, so each item
    is handled exactly once (no padding duplicates)."""
    return range(context.rank, size, context.world_size)


def broadcast_object(value: Any, context: DistContext) -> Any:
    """Rank 0's ``value`` in every process."""
    if not context.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any, context: DistContext) -> list[Any]:
    """Every process's ``value``, in rank order, in every process."""
    if not context.distributed:
        return [value]
    values: list[Any] = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place, and return it."""
    if context.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_process(flag: bool, context: DistContext) -> bool:
    """True in every process when ``flag`` is true in at least one."""
    if not context.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], device=context.device)
    return bool(all_reduce_sum(value, context).item())


@contextlib.contextmanager
def main_process_first(context: DistContext) -> Iterator[None]:
    """Run the block in rank 0 first and in the other processes after it (downloads, generated
    data: one process writes, the others then read). If rank 0 fails inside, torchrun stops the
    waiting processes."""
    if context.distributed and not context.is_main:
        dist.barrier()
    yield
    if context.distributed and context.is_main:
        dist.barrier()


def shutdown(context: DistContext) -> None:
    """Leave the process group after a successful run (after a barrier, so no process exits
    early). Not for error paths: a process that fails just exits and torchrun stops the rest."""
    if context.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

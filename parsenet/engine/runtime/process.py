"""Process-wide settings: seeds, deterministic kernels and the compute device."""

from __future__ import annotations

import contextlib
import os
import random
import resource
from collections.abc import Iterator

import numpy as np
import torch

from parsenet.errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for reproducible results (CUDA ≥ 10.2)


@contextlib.contextmanager
def deterministic_algorithms(warn_only: bool = False) -> Iterator[None]:
    """Inside the block torch picks deterministic kernels (``torch.use_deterministic_algorithms``,
    cuDNN deterministic, no cuDNN autotuning) and cuBLAS gets the workspace setting it needs
    (``CUBLAS_WORKSPACE_CONFIG``, unless already set; cuBLAS reads it when PyTorch first uses it,
    so enter the block before any CUDA work for it to count). An operator with no deterministic
    kernel raises, or with ``warn_only`` warns "… does not have a deterministic implementation"
    and runs. Everything is restored afterwards."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        enabled, only_warn, cudnn_deterministic, cudnn_benchmark, workspace = saved
        torch.use_deterministic_algorithms(enabled, warn_only=only_warn)
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.backends.cudnn.benchmark = cudnn_benchmark
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """Inside the block float32 products and convolutions compute in float32, not TF32 (which
    cuDNN uses for float32 convolutions by default on recent GPUs)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are
    taken as they are. Anything else, or a GPU that is not there, is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device={name} but no CUDA GPU is available; use device=cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device={name} but only {count} CUDA GPU(s) exist (cuda:0…)")
    return device


def rng_state() -> dict:
    """The state of every random generator a training step uses (Python, NumPy, torch CPU and
    CUDA), as tensors and plain values that a ``weights_only`` checkpoint can hold."""
    version, internal, gauss = random.getstate()
    _, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore generators from :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on ``device``, or this process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

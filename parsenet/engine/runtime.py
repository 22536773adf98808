"""Process-wide settings: seeds and the compute device."""

from __future__ import annotations

import random

import numpy as np
import torch

from parsenet.errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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

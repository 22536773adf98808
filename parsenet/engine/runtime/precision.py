"""Mixed precision: autocast to bfloat16 or float16 (with a gradient scaler), or full float32."""

from __future__ import annotations

import contextlib

import torch

from parsenet.errors import ConfigError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """``train.amp``: the autocast region of the forward pass and, for fp16, a GradScaler.

    The L2Norm layers compute in float32 inside any autocast region (see ``L2Norm``).

    Args:
        mode: ``off``, ``bf16`` or ``fp16``.
        device: where the model runs (autocast and the scaler are per device type).
    """

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in AMP_DTYPES:
            raise ConfigError(f"train.amp={mode!r} is not one of {sorted(AMP_DTYPES)}")
        self.mode = mode
        self.device_type = device.type
        self.dtype = AMP_DTYPES[mode]
        self.scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context for forward passes and the loss."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

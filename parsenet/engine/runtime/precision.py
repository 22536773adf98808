"""Mixed precision: autocast to bfloat16 or float16 (with a gradient scaler), or full float32, in
training; and the precisions inference takes per backend (``precision=``), with the bf16 autocast
wrapper of ``backend=torch precision=bf16``."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

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


# What ``precision=`` may be for each inference ``backend=``: torch runs float32 or bf16 autocast
# (on a CPU with bf16 instructions), ONNX Runtime float32 or the statically quantised int8 model.
INFERENCE_PRECISIONS = {"torch": ("fp32", "bf16"), "onnxruntime": ("fp32", "int8")}


def check_inference_precision(backend: str, precision: str) -> None:
    """``backend`` and ``precision`` as a pair inference runs (see :data:`INFERENCE_PRECISIONS`).

    Raises:
        ConfigError: an unknown backend, or a precision that backend does not run, in one line
            naming the pairs there are.
    """
    pairs = ", ".join(
        f"backend={name} precision={choice}"
        for name, choices in INFERENCE_PRECISIONS.items()
        for choice in choices
    )
    if backend not in INFERENCE_PRECISIONS:
        raise ConfigError(f"backend={backend!r} is not one of {', '.join(INFERENCE_PRECISIONS)}")
    if precision not in INFERENCE_PRECISIONS[backend]:
        raise ConfigError(
            f"backend={backend} does not run precision={precision!r}; the pairs are: {pairs}"
        )


class AutocastModel(nn.Module):
    """``model`` run under autocast to ``dtype`` on its device, returning float32 logits (the
    L2Norm layers inside compute in float32 all the same)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device_type = next(self.model.parameters()).device.type
        with torch.autocast(device_type, dtype=self.dtype):
            return self.model(images).float()

    def extra_repr(self) -> str:
        return f"autocast {self.dtype}"

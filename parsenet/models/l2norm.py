"""L2 normalisation over channels with a learned per-channel scale (ParseNet's Normalize layer)."""

from __future__ import annotations

import torch
from torch import nn


class L2Norm(nn.Module):
    """Normalise features to unit L2 norm over channels at every location, then scale.

    ``y_c = γ_c · x_c / sqrt(Σ_k x_k² + eps)``, with ``eps`` inside the square root as in the
    original Caffe ``Normalize`` layer (``across_spatial: false``). The norm is always computed in
    float32 (or wider), also under autocast, because float16 would round ``eps=1e-10`` to zero.

    Args:
        channels: number of input channels.
        scale: initial value of γ (the paper uses 10 for fc7 and the pooled context).
        eps: added to the sum of squares before the square root.
        channel_shared: one γ for all channels instead of one per channel.
        learn_scale: learn γ (True) or keep it fixed at ``scale`` (Caffe's ``fix_scale``).
    """

    def __init__(
        self,
        channels: int,
        scale: float = 10.0,
        eps: float = 1e-10,
        channel_shared: bool = False,
        learn_scale: bool = True,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.initial_scale = float(scale)
        gamma = torch.full((1 if channel_shared else channels,), float(scale))
        if learn_scale:
            self.weight = nn.Parameter(gamma)
        else:
            self.register_buffer("weight", gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            wide = x.to(compute_dtype)
            norm = torch.sqrt(wide.pow(2).sum(dim=1, keepdim=True) + self.eps)
            y = wide / norm * self.weight.to(compute_dtype).view(1, -1, 1, 1)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        learned = isinstance(self.weight, nn.Parameter)
        return f"{self.channels}, scales={self.weight.numel()}, eps={self.eps}, learned={learned}"

"""Multiply-accumulates of a model's dense layers, counted on a real forward pass.

Convolutions (transposed, grouped and depthwise ones included) and linear layers carry all but a
sliver of a ParseNet's arithmetic; element-wise layers (ReLU, L2Norm, pooling, dropout) are left
out. Hooks read the actual input and output shapes, so the count follows the image size,
ceil-mode pooling and cropping exactly as the model computes them. One MAC is two FLOPs; a
training step (forward, gradient of the input, gradient of the weights) costs about three
forward passes.

The modern trunks and heads need nothing more. Their arithmetic layers are convolutions the hooks
already see: MobileNetV3's depthwise convolutions (``k_h · k_w`` MACs per output value, one input
channel per group), squeeze-excitation's two fully connected layers (1×1 convolutions in
torchvision), ASPP's and LR-ASPP's layers. What they add besides is element-wise, as ReLU is:
BatchNorm (not folded into the convolutions in eager PyTorch), Hardswish, Hardsigmoid, the
excitation's scaling, residual additions, bilinear upsampling. Counted with hooks at 500×375
(2 FLOPs per BatchNorm output, 4 per Hardswish, 3 per Hardsigmoid, 1 per other output), the
BatchNorm, activation, L2Norm and upsampling outputs come to about 3 % of MobileNetV3 ParseNet's
2.76 GFLOP and 0.2 % of ResNet-50-D8 ParseNet's 144 GFLOP. They are left out: memory-bound
passes that no GEMM could run, whose FLOPs would only blur a rate compared with the GEMM peak
(their time shows in the profiles, ``scripts/benchmark.py --profile``).

The count is nominal: every tap of a dilated convolution counts, also the taps that fall in the
zero padding. On a 500×375 image at output stride 16 (a 24×32 map) ASPP's rate-36 branch has
every off-centre tap there; oneDNN evidently skips them, so such layers run "above" the GEMM peak
(docs/benchmarks.md, What each model costs).
"""

from __future__ import annotations

import math

import torch
from torch import nn

TRAINING_FORWARDS = 3  # forward + input gradient + weight gradient


def layer_macs(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of one call of a convolution, transposed convolution or linear layer (0 otherwise).

    A convolution does ``C_in/groups · k_h · k_w`` MACs per output value; a transposed one the
    same per *input* value (each input pixel scatters a kernel into the output); a linear layer
    ``in_features`` per output value. Dilation and stride change no per-value cost.
    """
    if isinstance(module, nn.ConvTranspose2d):
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inputs.numel() * per_input
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


@torch.no_grad()
def count_macs(model: nn.Module, images: torch.Tensor) -> dict[str, int]:
    """MACs of one forward pass of ``model`` on ``images``, per named layer (summed over calls).

    The model runs once in its current mode; the hooks are removed afterwards.
    """
    counts: dict[str, int] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            macs = layer_macs(module, args[0], output)
            if macs:
                counts[name] = counts.get(name, 0) + macs

        return hook

    handles = [
        module.register_forward_hook(hook_for(name))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()
    return counts


def forward_flops(model: nn.Module, images: torch.Tensor) -> int:
    """FLOPs (2 per MAC) of one forward pass on the batch ``images``."""
    return 2 * sum(count_macs(model, images).values())

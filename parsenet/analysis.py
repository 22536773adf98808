"""What a trained model's normalisation layers see and learned (the paper's Figure 2)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from parsenet.models.head import CONTEXT_TAP
from parsenet.models.l2norm import L2Norm
from parsenet.models.parsenet import SegmentationNet

FIGURE2_LAYERS = ("conv4_3", "fc7", CONTEXT_TAP)


@torch.no_grad()
def feature_norms(
    model: SegmentationNet, batches: Iterable[torch.Tensor], layers=FIGURE2_LAYERS
) -> dict[str, float]:
    """Mean L2 norm (over channels, per location) of each layer's features before normalisation.

    ``pool6`` is the global average of the trunk's deepest tap (fc7 on VGG; one vector per
    image). Runs in eval mode (no dropout) and averages over every location of every image in
    ``batches``.
    """
    model.eval()
    source = model.backbone.deepest_tap
    trunk_layers = tuple(sorted({source if name == CONTEXT_TAP else name for name in layers}))
    sums = dict.fromkeys(layers, 0.0)
    counts = dict.fromkeys(layers, 0)
    for images in batches:
        features = model.backbone.features(images, trunk_layers)
        for name in layers:
            if name == CONTEXT_TAP:
                x = features[source].mean(dim=(2, 3), keepdim=True)
            else:
                x = features[name]
            norms = x.double().pow(2).sum(dim=1).sqrt()
            sums[name] += norms.sum().item()
            counts[name] += norms.numel()
    return {name: sums[name] / max(counts[name], 1) for name in layers}


def learned_scales(model: torch.nn.Module) -> dict[str, dict[str, float]]:
    """Mean, min and max of every L2Norm's γ, by module name, and ``change``: the mean of
    |γ − γ₀| over its channels (γ₀ the value it was built with; opposite moves do not cancel)."""
    summary = {}
    for name, module in model.named_modules():
        if isinstance(module, L2Norm):
            gamma = module.weight.detach().double()
            summary[name] = {
                "mean": gamma.mean().item(),
                "min": gamma.min().item(),
                "max": gamma.max().item(),
                "change": (gamma - module.initial_scale).abs().mean().item(),
                "channels": gamma.numel(),
            }
    return summary

"""What to look at while a model trains: prediction panels, learned scales, feature norms."""

from __future__ import annotations

import numpy as np
import torch

from parsenet.analysis import feature_norms, learned_scales
from parsenet.data.base import SegmentationDataset
from parsenet.errors import DataError
from parsenet.models.head import CONTEXT_TAP
from parsenet.models.parsenet import SegmentationNet
from parsenet.visualize import comparison_panel


@torch.no_grad()
def validation_panels(
    model: SegmentationNet, dataset: SegmentationDataset, count: int, device: torch.device
) -> list[tuple[str, np.ndarray, torch.Tensor]]:
    """For the first ``count`` images: (name, image | label | prediction panel, input tensor).

    Under ``data.on_bad_sample=skip`` unreadable pairs are passed over (evaluation reports them).
    """
    model.eval()
    info = dataset.info
    panels = []
    for index in range(len(dataset)):
        if len(panels) == count:
            break
        try:
            image, label = dataset.load_pair(index)
        except DataError:
            if dataset.on_bad_sample == "raise":
                raise
            continue
        tensor = dataset.transform(image, label)["image"].unsqueeze(0).to(device)
        prediction = model(tensor).argmax(dim=1)[0].cpu().numpy()
        panel = comparison_panel(image, label, prediction, info.palette, info.ignore_index)
        panels.append((dataset.sample_name(index), panel, tensor))
    return panels


def stack_panels(panels: list[np.ndarray]) -> np.ndarray:
    """Panels one below the other (white padding on the right, 4-pixel white gaps)."""
    width = max(panel.shape[1] for panel in panels)
    rows = []
    for panel in panels:
        padded = np.full((panel.shape[0] + 4, width, 3), 255, dtype=np.uint8)
        padded[: panel.shape[0], : panel.shape[1]] = panel
        rows.append(padded)
    return np.concatenate(rows, axis=0)


def normalisation_scalars(model: SegmentationNet, images: list[torch.Tensor]) -> dict[str, float]:
    """The paper's Figure 2, live: mean γ of every L2Norm, its mean |γ − γ₀|, and the mean L2
    norm, before normalisation, of every layer the head taps (pool6 = the global average of fc7)."""
    taps = [*model.head.spatial_taps, *([CONTEXT_TAP] if model.head.context_bins else [])]
    values = {
        f"feature_norm/{name}": value for name, value in feature_norms(model, images, taps).items()
    }
    for name, summary in learned_scales(model).items():
        values[f"gamma/{name.removeprefix('head.norms.')}"] = summary["mean"]
        values[f"gamma_change/{name.removeprefix('head.norms.')}"] = summary["change"]
    return values


def evaluation_insight(
    model: SegmentationNet,
    dataset: SegmentationDataset,
    per_class_iou: dict[str, float | None],
    count: int,
    device: torch.device,
) -> tuple[dict[str, float], np.ndarray | None]:
    """What TensorBoard gets at each evaluation: per-class IoU, γ and feature-norm scalars, and
    a grid of the first ``count`` validation panels (None when none could be drawn)."""
    values = {f"val_iou/{name}": iou for name, iou in per_class_iou.items() if iou is not None}
    panels = validation_panels(model, dataset, count, device)
    values.update(normalisation_scalars(model, [tensor for _, _, tensor in panels]))
    grid = stack_panels([panel for _, panel, _ in panels]) if panels else None
    return values, grid

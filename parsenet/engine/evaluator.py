"""Whole-image inference over a split into one confusion matrix."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from parsenet.metrics import ConfusionMatrix


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    ignore_index: int = 255,
    progress: bool = False,
) -> ConfusionMatrix:
    """Run the model on every image at its own size and count predictions against labels.

    The argmax is taken on ``device`` and only the confusion matrix is kept, so memory does not
    grow with the split. The model is left in eval mode.
    """
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index)
    for batch in tqdm(loader, desc="eval", leave=False, disable=None if progress else True):
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        prediction = model(images).argmax(dim=1)
        confusion.update(prediction, labels)
    return confusion

"""The training loss: pixel-wise cross-entropy over labelled pixels (``configs/loss/``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSS_REDUCTIONS = ("mean", "sum")


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, reduction: str = "mean"
) -> torch.Tensor:
    """Pixel-wise cross-entropy over labelled pixels, in float32.

    ``mean`` averages over the labelled pixels of the batch (0, not NaN, when there are none);
    ``sum`` sums over them and divides by the batch size only — Caffe's ``SoftmaxWithLoss`` with
    ``normalize: false``, the paper's setting, whose learning rate is ≈ N_labelled_pixels times
    smaller (1e-8 there ≈ 1.5e-3 to 1.9e-3 with ``mean`` on VOC images).
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total / labels.shape[0]
    return total / (labels != ignore_index).sum().clamp(min=1)


class SegmentationLoss(nn.Module):
    """:func:`segmentation_loss` as a module, built from ``configs/loss/cross_entropy.yaml``.

    Args:
        reduction: ``mean`` or ``sum`` (see :func:`segmentation_loss`).
        ignore_index: the label value that is not scored (255 in every dataset here; the trainer
            passes the dataset's own).
    """

    def __init__(self, reduction: str = "mean", ignore_index: int = 255) -> None:
        super().__init__()
        if reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss.reduction={reduction!r} is not one of {LOSS_REDUCTIONS}")
        self.reduction = reduction
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of N×K×H×W logits against N×H×W labels."""
        return segmentation_loss(logits, labels, self.ignore_index, self.reduction)

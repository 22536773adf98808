"""The training loss: pixel-wise cross-entropy over labelled pixels (``configs/loss/``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOSS_REDUCTIONS = ("mean", "sum")


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int,
    reduction: str = "mean",
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel-wise cross-entropy over labelled pixels, in float32.

    ``mean`` averages over the labelled pixels of the batch (0, not NaN, when there are none);
    ``sum`` sums over them and divides by the batch size only — Caffe's ``SoftmaxWithLoss`` with
    ``normalize: false``, the paper's setting, whose learning rate is ≈ N_labelled_pixels times
    smaller (1e-8 there ≈ 1.5e-3 to 1.9e-3 with ``mean`` on VOC images). With ``class_weight``
    (one weight per class) each pixel's term is multiplied by its class's weight and ``mean``
    divides by the summed weights of the labelled pixels instead of their count.
    """
    total = F.cross_entropy(
        logits.float(), labels, weight=class_weight, ignore_index=ignore_index, reduction="sum"
    )
    if reduction == "sum":
        return total / labels.shape[0]
    labelled = labels != ignore_index
    if class_weight is None:
        return total / labelled.sum().clamp(min=1)
    return total / class_weight[labels[labelled]].sum().clamp(min=torch.finfo(total.dtype).tiny)


class SegmentationLoss(nn.Module):
    """:func:`segmentation_loss` as a module, built from ``configs/loss/cross_entropy.yaml``.

    Args:
        reduction: ``mean`` or ``sum`` (see :func:`segmentation_loss`).
        ignore_index: the label value that is not scored (255 in every dataset here; the trainer
            passes the dataset's own).
        class_weight: ``None`` (every class 1) or one non-negative weight per class (for
            ``loss.class_weight=median_frequency`` the trainer computes them:
            :mod:`parsenet.engine.training.class_weight`).
    """

    def __init__(
        self,
        reduction: str,
        ignore_index: int = 255,
        class_weight: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss.reduction={reduction!r} is not one of {LOSS_REDUCTIONS}")
        self.reduction = reduction
        self.ignore_index = ignore_index
        weight = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of N×K×H×W logits against N×H×W labels."""
        return segmentation_loss(
            logits, labels, self.ignore_index, self.reduction, self.class_weight
        )

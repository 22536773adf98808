"""Segmentation metrics from one int64 confusion matrix summed over a whole split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class ConfusionMatrix:
    """Accumulates an int64 ``num_classes × num_classes`` matrix (rows: label, columns: prediction).

    Pixels whose label is ``ignore_index`` (or any value outside the classes) are not counted.
    Update on the device the predictions live on; only the small matrix is ever copied.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, label: torch.Tensor) -> None:
        """Add predicted class indices and labels of the same shape."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} vs label {tuple(label.shape)}")
        n = self.num_classes
        valid = (label >= 0) & (label < n)
        codes = label[valid].to(torch.int64) * n + prediction[valid].to(torch.int64)
        counts = torch.bincount(codes, minlength=n * n).reshape(n, n)
        self.matrix = self.matrix.to(counts.device) + counts

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        """Scores of the accumulated matrix; see :func:`scores_from_confusion`."""
        return scores_from_confusion(self.matrix.cpu().numpy(), class_names)


def scores_from_confusion(matrix: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """Pixel accuracy, mean accuracy, per-class IoU, mIoU and frequency-weighted IoU.

    A class absent from both labels and predictions has no IoU (``None`` in the result) and is left
    out of the means, as in the VOC devkit. All values are fractions in [0, 1].

    Returns:
        ``pixel_acc``, ``mean_acc``, ``mIoU``, ``fwIoU``, ``per_class_iou`` and
        ``per_class_acc`` (class name → value or ``None``).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    num_classes = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    true_positive = np.diag(matrix)
    label_count = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    union = label_count + predicted_count - true_positive
    total = matrix.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        accuracy = np.where(label_count > 0, true_positive / label_count, np.nan)
    frequency = label_count / total if total > 0 else np.zeros(num_classes)
    present = label_count > 0
    return {
        "pixel_acc": float(true_positive.sum() / total) if total > 0 else 0.0,
        "mean_acc": _nanmean(accuracy),
        "mIoU": _nanmean(iou),
        "fwIoU": float((frequency[present] * iou[present]).sum()),
        "per_class_iou": {name: _optional(value) for name, value in zip(names, iou, strict=True)},
        "per_class_acc": {
            name: _optional(value) for name, value in zip(names, accuracy, strict=True)
        },
    }


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else 0.0


def _optional(value: float) -> float | None:
    return None if np.isnan(value) else float(value)

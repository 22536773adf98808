"""Segmentation metrics of a whole split: one int64 confusion matrix (pixel accuracy, IoU, …)
and, from the same predictions, per-image statistics of what context is for (which classes an
image holds): :class:`ContextStatistics`. :class:`SplitScores` keeps both."""

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


class ContextStatistics:
    """Counts, per image, whether the predicted classes are the ones the image holds.

    Over labelled pixels only (``ignore_index`` and values outside the classes left out), per
    image: the true class set (classes in the label) and the predicted class set (classes
    predicted on those pixels). Kept as four int64 counts summed over the split (and over
    processes, like the confusion matrix): pixels predicted as a class absent from their image's
    label, labelled pixels, images whose two sets are equal, and images with a labelled pixel
    (an image without any is left out of both statistics).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        # out-of-context pixels, labelled pixels, images with equal class sets, images counted
        self.counts = torch.zeros(4, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, label: torch.Tensor) -> None:
        """Add one image (H×W) or a batch of them (N×H×W), each image counted on its own."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} vs label {tuple(label.shape)}")
        if label.dim() < 2:
            raise ValueError(f"expected H×W or N×H×W maps, got shape {tuple(label.shape)}")
        # Per image, one bincount row of n + 1 bins: the classes, and one for a prediction
        # outside them (never in the true set, so always out of context).
        n, images = self.num_classes, label.shape[0] if label.dim() > 2 else 1
        label = label.reshape(images, -1).to(torch.int64)
        prediction = prediction.reshape(images, -1).to(torch.int64)
        valid = (label >= 0) & (label < n)
        row = torch.arange(images, device=label.device).unsqueeze(1).expand_as(label)[valid]
        predicted = prediction[valid]
        predicted = torch.where((predicted >= 0) & (predicted < n), predicted, n)
        size, shape = images * (n + 1), (images, n + 1)
        true_count = torch.bincount(row * (n + 1) + label[valid], minlength=size).reshape(shape)
        predicted_count = torch.bincount(row * (n + 1) + predicted, minlength=size).reshape(shape)
        true_set, predicted_set = true_count > 0, predicted_count > 0
        labelled = true_set.any(dim=1)
        counts = torch.stack(
            [
                (predicted_count * ~true_set).sum(),
                true_count.sum(),
                ((true_set == predicted_set).all(dim=1) & labelled).sum(),
                labelled.sum(),
            ]
        )
        self.counts = self.counts.to(counts.device) + counts

    def compute(self) -> dict[str, float]:
        """``out_of_context``: the fraction of the split's labelled pixels predicted as a class
        absent from their image's label; ``class_set_accuracy``: the fraction of images whose
        predicted class set equals their true class set. Both 0.0 when nothing was counted."""
        out, pixels, equal, images = (int(value) for value in self.counts.cpu())
        return {
            "out_of_context": out / pixels if pixels else 0.0,
            "class_set_accuracy": equal / images if images else 0.0,
        }


class SplitScores:
    """What evaluating a split accumulates: the :class:`ConfusionMatrix` and the
    :class:`ContextStatistics` of the same predictions."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.confusion = ConfusionMatrix(num_classes, ignore_index)
        self.context = ContextStatistics(num_classes, ignore_index)

    @property
    def matrix(self) -> torch.Tensor:
        """The confusion matrix (rows: label, columns: prediction)."""
        return self.confusion.matrix

    def update(self, prediction: torch.Tensor, label: torch.Tensor) -> None:
        """Add one image (H×W) or a batch (N×H×W) of predicted class indices and labels."""
        self.confusion.update(prediction, label)
        self.context.update(prediction, label)

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        """:func:`scores_from_confusion` of the matrix plus ``out_of_context`` and
        ``class_set_accuracy``."""
        return {**self.confusion.compute(class_names), **self.context.compute()}


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

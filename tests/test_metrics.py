import numpy as np
import pytest
import torch

from parsenet.metrics import ConfusionMatrix, scores_from_confusion

NAMES = ["bg", "cat", "dog", "cow"]


def test_hand_computed_scores_with_ignored_pixels_and_an_absent_class():
    # Classes 0..3; class 3 ("cow") appears in neither label nor prediction.
    label = torch.tensor([[0, 0, 0, 1], [1, 1, 2, 255], [2, 255, 0, 1]])
    prediction = torch.tensor([[0, 0, 1, 1], [1, 2, 2, 3], [0, 0, 0, 1]])
    confusion = ConfusionMatrix(4, ignore_index=255)
    confusion.update(prediction, label)
    expected_matrix = np.array(
        [
            [3, 1, 0, 0],  # label 0: four pixels, one predicted as 1
            [0, 3, 1, 0],  # label 1: four pixels, one predicted as 2
            [1, 0, 1, 0],  # label 2: two pixels, one predicted as 0
            [0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(confusion.matrix.numpy(), expected_matrix)
    scores = confusion.compute(NAMES)
    # IoU = TP / (GT + Pred - TP): bg 3/(4+4-3), cat 3/(4+4-3), dog 1/(2+2-1)
    assert scores["per_class_iou"] == pytest.approx(
        {"bg": 0.6, "cat": 0.6, "dog": 1 / 3, "cow": None}
    )
    assert scores["mIoU"] == pytest.approx((0.6 + 0.6 + 1 / 3) / 3)
    assert scores["pixel_acc"] == pytest.approx(7 / 10)
    assert scores["mean_acc"] == pytest.approx((3 / 4 + 3 / 4 + 1 / 2) / 3)
    assert scores["fwIoU"] == pytest.approx(0.4 * 0.6 + 0.4 * 0.6 + 0.2 / 3)
    assert scores["per_class_acc"]["cow"] is None


def test_predicted_but_absent_class_counts_with_zero_iou():
    scores = scores_from_confusion(np.array([[2, 1], [0, 0]]), ["a", "b"])
    assert scores["per_class_iou"] == {"a": pytest.approx(2 / 3), "b": 0.0}
    assert scores["mIoU"] == pytest.approx(1 / 3)
    assert scores["mean_acc"] == pytest.approx(2 / 3)


def test_accumulates_over_updates_like_one_big_update():
    torch.manual_seed(0)
    labels = torch.randint(0, 5, (3, 8, 9))
    labels[labels == 4] = 255
    predictions = torch.randint(0, 4, (3, 8, 9))
    split = ConfusionMatrix(4)
    for p, y in zip(predictions, labels, strict=True):
        split.update(p, y)
    whole = ConfusionMatrix(4)
    whole.update(predictions, labels)
    assert torch.equal(split.matrix, whole.matrix)
    assert split.matrix.dtype == torch.int64
    assert int(split.matrix.sum()) == int((labels != 255).sum())


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        ConfusionMatrix(3).update(torch.zeros(2, 2), torch.zeros(2, 3))

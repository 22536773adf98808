import numpy as np
import pytest
import torch

from parsenet.metrics import (
    BoundaryIoU,
    ConfusionMatrix,
    boundary_width,
    contour_band,
    scores_from_confusion,
)

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


# Boundary IoU on 6×6 maps (d = 1: round(0.02 · 8.49) = 0, at least 1). Label: class 0 in
# columns 0–2, class 1 in 3–5; prediction: class 0 in columns 0–3, class 1 in 4–5.
BOUNDARY_LABEL = torch.tensor([[0, 0, 0, 1, 1, 1]] * 6)
BOUNDARY_PREDICTION = torch.tensor([[0, 0, 0, 0, 1, 1]] * 6)


def test_boundary_iou_against_a_hand_computation():
    # A pixel is in a class's band when its 3×3 square holds another value or leaves the image.
    # Label, class 0: all 18 pixels but column 1, rows 1–4 → 14; class 1 likewise 14.
    # Prediction, class 0 (24 pixels): all but columns 1–2, rows 1–4 → 16; class 1: all 12.
    # Class 0: both bands hold column 0 (6), rows 0 and 5 of columns 1–2 (4) → 10;
    #   union 14 + 16 − 10 = 20 → 0.5.
    # Class 1: both hold column 5 (6) and rows 0, 5 of column 4 (2) → 8; union 14 + 12 − 8 = 18.
    boundary = BoundaryIoU(2)
    boundary.update(BOUNDARY_PREDICTION, BOUNDARY_LABEL)
    assert boundary.counts.tolist() == [[10, 8], [20, 18]]
    scores = boundary.compute(["a", "b"])
    assert scores["per_class_boundary_iou"] == pytest.approx({"a": 0.5, "b": 8 / 18})
    assert scores["boundary_iou"] == pytest.approx((0.5 + 8 / 18) / 2)


def test_boundary_iou_leaves_ignored_pixels_out_and_sums_counts_over_images():
    # Column 0 of the label ignored: class 0 is columns 1–2, all 12 pixels in its band (column 1
    # touches the ignored column, column 2 class 1). The prediction's class-0 band on labelled
    # pixels: column 3 (6) and rows 0, 5 of columns 1–2 (4) → 10. Both: those 4 → union 18.
    # Class 1 is as before (8 of 18). Summed with the first image: class 0 (10 + 4) / (20 + 18),
    # class 1 16 / 36: counts, not per-image scores, are averaged.
    ignored = BOUNDARY_LABEL.clone()
    ignored[:, 0] = 255
    alone = BoundaryIoU(2)
    alone.update(BOUNDARY_PREDICTION, ignored)
    assert alone.counts.tolist() == [[4, 8], [18, 18]]
    batch, one_by_one = BoundaryIoU(2), BoundaryIoU(2)
    batch.update(torch.stack([BOUNDARY_PREDICTION] * 2), torch.stack([BOUNDARY_LABEL, ignored]))
    for label in (BOUNDARY_LABEL, ignored):
        one_by_one.update(BOUNDARY_PREDICTION, label)
    for both in (batch, one_by_one):
        assert both.compute(["a", "b"])["per_class_boundary_iou"] == pytest.approx(
            {"a": 14 / 38, "b": 16 / 36}
        )
    absent = BoundaryIoU(3)  # class 2 in neither map: no score, left out of the mean
    absent.update(BOUNDARY_PREDICTION, BOUNDARY_LABEL)
    assert absent.compute()["per_class_boundary_iou"]["2"] is None
    assert absent.compute()["boundary_iou"] == pytest.approx((0.5 + 8 / 18) / 2)


def test_the_band_is_two_percent_of_the_diagonal_and_as_wide_as_that():
    assert boundary_width(375, 500) == 12  # round(0.02 · 625) = round(12.5) = 12
    assert boundary_width(30, 40) == 1 and boundary_width(3, 4) == 1  # at least one pixel
    # One class over 20×20 with d = 3: only the edge is a contour, so the band is every pixel
    # within 3 of it: 400 − 14 × 14 = 204.
    assert int(contour_band(torch.zeros(1, 20, 20), 3).sum()) == 204
    # A 4×4 square of class 1 in the middle of 20×20 (rows and columns 8–11), d = 2: the square
    # is all band (16); class 0's band: the edge ring (400 − 16 × 16 = 144) plus the ring of
    # width 2 around the square (8 × 8 − 16 = 48) → 192.
    square = torch.zeros(1, 20, 20)
    square[0, 8:12, 8:12] = 1
    band = contour_band(square, 2)
    assert int((band & (square == 1)).sum()) == 16 and int((band & (square == 0)).sum()) == 192

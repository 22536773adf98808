import numpy as np

from parsenet.report import scores_table
from parsenet.visualize import IGNORE_COLOUR, colorize, comparison_panel, overlay

PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]


def test_colorize_uses_the_palette_and_marks_ignore():
    label = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    coloured = colorize(label, PALETTE)
    assert coloured.shape == (2, 2, 3) and coloured.dtype == np.uint8
    assert tuple(coloured[0, 1]) == (128, 0, 0) and tuple(coloured[1, 0]) == (0, 128, 0)
    assert tuple(coloured[1, 1]) == IGNORE_COLOUR


def test_overlay_blends_objects_and_keeps_background_pixels():
    image = np.full((1, 2, 3), 100, dtype=np.uint8)
    coloured = colorize(np.array([[0, 1]], dtype=np.uint8), PALETTE)
    out = overlay(image, coloured, alpha=0.5)
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert tuple(out[0, 1]) == (114, 50, 50)


def test_comparison_panel_is_three_images_wide():
    image = np.zeros((5, 7, 3), dtype=np.uint8)
    label = np.ones((5, 7), dtype=np.uint8)
    panel = comparison_panel(image, label, label, PALETTE)
    assert panel.shape == (5, 3 * 7 + 2 * 4, 3)


def test_scores_table_side_by_side():
    scores = {
        "per_class_iou": {"bg": 0.5, "cat": None},
        "mIoU": 0.5,
        "pixel_acc": 0.75,
        "mean_acc": 0.6,
        "fwIoU": 0.55,
    }
    table = scores_table({"ParseNet": scores, "FCN": {**scores, "mIoU": 0.25}}, ["bg", "cat"])
    lines = table.splitlines()
    assert "ParseNet" in lines[0] and "FCN" in lines[0]
    assert lines[2].split() == ["bg", "50.00", "50.00"]
    assert lines[3].split() == ["cat", "n/a", "n/a"]
    assert "mIoU" in table and "25.00" in table

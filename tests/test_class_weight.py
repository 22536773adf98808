"""Class-weighted loss: median-frequency balancing from the training labels, checked lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_MODEL, assert_one_line_error, run_cli, write_palette_png, write_voc_tree

from parsenet.data import build_dataset
from parsenet.data.statistics import label_statistics, median_frequency_weights
from parsenet.engine.training.class_weight import checked_class_weight
from parsenet.engine.training.loss import SegmentationLoss, segmentation_loss
from parsenet.errors import ConfigError


def voc_with_labels(root: Path, labels: list[np.ndarray]) -> Path:
    """A VOC tree whose train labels are exactly ``labels``."""
    write_voc_tree(
        root, {"train": len(labels), "val": 1}, size=(labels[0].shape[1], labels[0].shape[0])
    )
    base = root / "VOCdevkit" / "VOC2012"
    for index, label in enumerate(labels):
        write_palette_png(label, base / "SegmentationClass" / f"2007_train_{index:03d}.png")
    return root


def test_median_frequency_weights_on_hand_made_labels(tmp_path: Path) -> None:
    # Image 0: 6 px background, 2 px class 1 (ignored band not counted); image 1: 4 px class 2,
    # 4 px background. freq(bg) = 10/16, freq(1) = 2/8, freq(2) = 4/8; median of the three = 1/2.
    first = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [255, 255, 255, 255], [255] * 4])
    second = np.array([[2, 2, 0, 0], [2, 2, 0, 0], [255] * 4, [255] * 4])
    root = voc_with_labels(tmp_path / "voc", [first, second])
    dataset = build_dataset({"name": "voc", "root": str(root), "num_classes": 21}, "train")
    stats = label_statistics(dataset, 21, 255)
    assert stats.pixels[[0, 1, 2]].tolist() == [10, 2, 4] and stats.pixels[21] == 16
    assert stats.images[[0, 1, 2]].tolist() == [2, 1, 1]
    assert stats.image_pixels[[0, 1, 2]].tolist() == [16, 8, 8]
    weights = median_frequency_weights(stats)
    np.testing.assert_allclose(weights[:3], [0.5 / (10 / 16), 0.5 / (2 / 8), 0.5 / (4 / 8)])
    assert (weights[3:] == 1).all()  # classes that never occur


def test_weighted_loss_matches_the_definition() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 0] = 255
    weight = torch.tensor([0.5, 2.0, 1.0])
    labelled = labels != 255
    per_pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")[labelled]
    pixel_weight = weight[labels[labelled]]
    expected_mean = (per_pixel * pixel_weight).sum() / pixel_weight.sum()
    loss = segmentation_loss(logits, labels, 255, "mean", weight)
    torch.testing.assert_close(loss, expected_mean)
    summed = segmentation_loss(logits, labels, 255, "sum", weight)
    torch.testing.assert_close(summed, (per_pixel * pixel_weight).sum() / 2)
    ones = SegmentationLoss("mean", 255, [1.0, 1.0, 1.0])(logits, labels)
    torch.testing.assert_close(ones, SegmentationLoss("mean", 255)(logits, labels))
    assert not torch.equal(loss, ones)
    # Nothing to learn from: every pixel ignored, or only zero-weight classes → 0, not NaN.
    ignored = torch.full_like(labels, 255)
    assert segmentation_loss(logits, ignored, 255, "mean", weight).item() == 0.0
    zero_weight = torch.tensor([0.0, 1.0, 1.0])
    only_zero = torch.zeros_like(labels)
    assert segmentation_loss(logits, only_zero, 255, "mean", zero_weight).item() == 0.0


@pytest.mark.parametrize(
    "setting",
    [[1.0, 2.0], [1.0, -1.0, 1.0], "inverse", [0, 0, 0], ["a", 1, 1], 3, [1, float("nan"), 1]],
)
def test_bad_class_weights_are_one_line_config_errors(setting) -> None:
    with pytest.raises(ConfigError, match="loss.class_weight") as caught:
        checked_class_weight(setting, 3)
    assert "\n" not in str(caught.value)


def test_good_class_weights_pass_as_numbers() -> None:
    assert checked_class_weight([1, 0, 2.5], 3) == [1.0, 0.0, 2.5]
    assert checked_class_weight("median_frequency", 3) == "median_frequency"
    assert checked_class_weight(None, 3) is None


def test_training_with_median_frequency_weights_logs_them(tmp_path: Path) -> None:
    first = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]] * 4)
    root = voc_with_labels(tmp_path / "voc", [first, first, np.zeros_like(first)])
    common = [
        "data=voc",
        f"data.root={root}",
        *TINY_MODEL,
        "optim=adamw",
        "data.num_workers=0",
        "data.augment.crop_size=16",
        "train.batch_size=2",
        "train.max_iters=2",
        "train.num_overlays=0",
    ]
    run = tmp_path / "run"
    run_cli(
        "train", *common, "loss.class_weight=median_frequency", f"hydra.run.dir={run}", check=True
    )
    # bg: 56 of 64 + 56 of 64 + 64 of 64 = 176/192; class 1: 16/128; median: their mean
    log = (run / "train.log").read_text()
    line = next(line for line in log.splitlines() if "class weights (median_frequency):" in line)
    median = (176 / 192 + 1 / 8) / 2
    bg, one = median / (176 / 192), median / (1 / 8)
    named = line.split("class weights (median_frequency): ")[1].split(", ")
    assert named[:3] == [f"background {bg:.3g}", f"aeroplane {one:.3g}", "bicycle 1"]
    assert json.loads((run / "metrics.json").read_text())["mIoU"] is not None
    bad = run_cli("train", *common, "loss.class_weight=[1,2]", f"hydra.run.dir={tmp_path / 'x'}")
    error = assert_one_line_error(bad, "loss.class_weight has 2 values", "21 non-negative numbers")
    assert not (tmp_path / "x").exists()
    assert "memory layout" not in bad.stderr, error  # refused before anything was built

"""What context is for, measured: ``out_of_context`` (labelled pixels predicted as a class absent
from their image) and ``class_set_accuracy`` (images whose predicted class set is the true one),
on hand-made label maps, through the evaluator, saved predictions (one and two processes) and
training."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, compose_train, run_cli, write_palette_png, write_voc_tree

from parsenet.engine.scoring.split import score_split
from parsenet.engine.training.trainer import Trainer
from parsenet.metrics import BoundaryIoU, ConfusionMatrix, ContextStatistics, SplitScores
from parsenet.report import class_table, scores_table

# Four 2×4 images, classes 0..3, 255 ignored.
LABELS = torch.tensor(
    [
        [[0, 0, 1, 1], [0, 255, 1, 1]],  # true set {0, 1}, 7 labelled pixels
        [[2, 2, 2, 2], [0, 0, 0, 0]],  # true set {0, 2}
        [[3, 3, 3, 3], [0, 0, 0, 0]],  # true set {0, 3}
        [[255] * 4, [255] * 4],  # no labelled pixel: counted in neither statistic
    ]
)
PREDICTIONS = torch.tensor(
    [
        [[0, 2, 1, 1], [0, 0, 1, 3]],  # 2 and 3 are not in the image: 2 pixels out of context;
        # the 0 on the ignored pixel does not count
        [[2, 2, 0, 2], [0, 0, 0, 0]],  # a mistake, but within the image's classes: set equal
        [[0, 0, 0, 0], [0, 0, 0, 0]],  # misses class 3: set {0} ≠ {0, 3}, nothing out of context
        [[1, 1, 1, 1], [1, 1, 1, 1]],
    ]
)
EXPECTED = {"out_of_context": 2 / 23, "class_set_accuracy": 1 / 3}


def test_hand_made_maps_one_image_at_a_time():
    statistics = ContextStatistics(4)
    for prediction, label in zip(PREDICTIONS, LABELS, strict=True):
        statistics.update(prediction, label)
    assert statistics.counts.tolist() == [2, 23, 1, 3]
    assert statistics.compute() == pytest.approx(EXPECTED)


def test_a_batch_counts_each_image_on_its_own():
    batch = ContextStatistics(4)
    batch.update(PREDICTIONS, LABELS)
    assert batch.counts.tolist() == [2, 23, 1, 3]
    # Pooled over the batch the class sets would be equal ({0,1,2,3} both): they are not pooled.
    whole = ContextStatistics(4)
    whole.update(
        PREDICTIONS.permute(1, 0, 2).reshape(2, 16), LABELS.permute(1, 0, 2).reshape(2, 16)
    )
    assert whole.counts.tolist() == [0, 23, 1, 1]


def test_predictions_outside_the_classes_are_out_of_context():
    statistics = ContextStatistics(3)
    statistics.update(torch.tensor([[0, 7], [0, 0]]), torch.tensor([[0, 0], [0, 0]]))
    assert statistics.compute() == {"out_of_context": 0.25, "class_set_accuracy": 0.0}


def test_nothing_counted_gives_zero_and_shape_mismatch_is_an_error():
    assert ContextStatistics(3).compute() == {"out_of_context": 0.0, "class_set_accuracy": 0.0}
    with pytest.raises(ValueError):
        ContextStatistics(3).update(torch.zeros(2, 2), torch.zeros(2, 3))


def test_split_scores_hold_the_confusion_scores_and_the_context_statistics():
    scores = SplitScores(4)
    scores.update(PREDICTIONS, LABELS)
    confusion = ConfusionMatrix(4)
    confusion.update(PREDICTIONS, LABELS)
    assert torch.equal(scores.matrix, confusion.matrix)
    boundary = BoundaryIoU(4)
    boundary.update(PREDICTIONS, LABELS)
    names = ["bg", "a", "b", "c"]
    expected = {**confusion.compute(names), **boundary.compute(names), **EXPECTED}
    assert scores.compute(names) == expected
    table = class_table(scores.compute(names), names)
    assert table.splitlines()[-2].split() == ["out", "of", "context", f"{100 * 2 / 23:.2f}"]
    assert table.splitlines()[-1].split() == ["class-set", "acc", "33.33"]
    # An older metrics.json without them shows n/a.
    old = {k: v for k, v in scores.compute(names).items() if k != "out_of_context"}
    assert "n/a" in scores_table({"old": old}, names).splitlines()[-2]


class OneHot(torch.nn.Module):
    """A "model" whose logits are the one-hot of the class index stored in channel 0."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.one_hot(images[:, 0].long(), 4).permute(0, 3, 1, 2).float()


def test_the_evaluator_counts_every_image_of_a_batch():
    images = PREDICTIONS.unsqueeze(1).expand(-1, 3, -1, -1).float()
    loader = [
        {"image": images[:2], "label": LABELS[:2]},
        {"image": images[2:], "label": LABELS[2:]},
    ]
    scores = score_split(OneHot(), loader, 4, torch.device("cpu"))
    assert scores.context.compute() == EXPECTED
    confusion = ConfusionMatrix(4)
    confusion.update(PREDICTIONS, LABELS)
    assert torch.equal(scores.matrix, confusion.matrix)


def context_tree(root: Path) -> tuple[Path, Path]:
    """A 3-image VOC val split with hand-made labels, and a folder of hand-made predictions.

    Each image is 40×30 with columns 0–1 ignored (1,140 labelled pixels each): a 10×10 block of a
    class absent from image 0, a class missed in image 1, a perfect image 2 → 100 of 3,420
    pixels out of context, 1 of 3 images with the right class set.
    """
    write_voc_tree(root, {"train": 2, "val": 3})
    base = root / "VOCdevkit" / "VOC2012"
    ids = (base / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    labels = np.zeros((3, 30, 40), dtype=np.uint8)
    labels[0, :, 20:] = 15  # background | person
    labels[1, 0:10, 10:20] = 5  # background with a bottle
    labels[2, 10:, :] = 12  # background over a dog
    predictions = labels.copy()
    predictions[0, 5:15, 25:35] = 7  # a car inside the person: 100 pixels out of context
    predictions[1] = 0  # the bottle missed: no pixel out of context, but the set is wrong
    folder = root / "predictions"
    for sample_id, label, prediction in zip(ids, labels, predictions, strict=True):
        label[:, :2] = 255
        prediction[:, :2] = 3  # whatever is predicted on ignored pixels does not count
        write_palette_png(label, base / "SegmentationClass" / f"{sample_id}.png")
        write_palette_png(prediction, folder / f"{sample_id}.png")
    return root, folder


def test_saved_predictions_get_the_statistics_in_metrics_json_and_the_console(tmp_path: Path):
    root, folder = context_tree(tmp_path / "voc")
    data = ["data=voc", f"data.root={root}", "data.num_workers=0"]
    out = tmp_path / "scored"
    result = run_cli("parsenet-eval", f"predictions={folder}", *data, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["out_of_context"] == pytest.approx(100 / 3420)
    assert metrics["class_set_accuracy"] == pytest.approx(1 / 3)
    assert metrics["mode"] == "predictions" and metrics["num_images"] == 3
    lines = result.stdout.splitlines()
    assert next(line for line in lines if line.startswith("out of context")).split()[-1] == "2.92"
    assert next(line for line in lines if line.startswith("class-set acc")).split()[-1] == "33.33"

    # Two processes share the images and sum their counts: the same statistics.
    two = tmp_path / "two"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "parsenet.cli.evaluate", f"predictions={folder}", *data, f"hydra.run.dir={two}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    shared = json.loads((two / "metrics.json").read_text())
    for key in ("out_of_context", "class_set_accuracy", "mIoU"):
        assert shared[key] == pytest.approx(metrics[key]), key


def test_training_logs_and_records_the_statistics(tmp_path: Path):
    run = tmp_path / "run"
    Trainer(compose_train(tmp_path, "train.max_iters=2"), run).run()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["out_of_context"] <= 1 and 0 <= metrics["class_set_accuracy"] <= 1
    records = [json.loads(line) for line in (run / "train_log.jsonl").open()]
    val = [r for r in records if r.get("kind") == "val"][-1]
    assert val["val/out_of_context"] == metrics["out_of_context"]
    assert val["val/class_set_accuracy"] == metrics["class_set_accuracy"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"val/out_of_context", "val/class_set_accuracy"} <= set(events.Tags()["scalars"])

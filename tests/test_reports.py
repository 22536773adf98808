"""Per-image scores and report.html: records and the worst images on hand-made maps, shared
between processes, ``per_image.csv`` and ``report.html`` written by parsenet-eval, parsenet-train
and ``parsenet.evaluate(...).write()``, turned off by the setting, self-contained and bounded."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    TINY_MODEL,
    TINY_SYNTHETIC,
    compose_train,
    run_cli,
    write_palette_png,
    write_voc_tree,
)
from PIL import Image

import parsenet
from parsenet.cli.evaluate import check_config
from parsenet.data import dataset_info
from parsenet.engine.training.settings import TrainSettings
from parsenet.errors import ConfigError
from parsenet.image_scores import ImageScores, per_image_csv
from parsenet.visualize import IGNORE_COLOUR, error_map

# Three 2×4 images, classes 0–2, 255 ignored.
LABELS = torch.tensor(
    [
        [[0, 0, 1, 1], [0, 255, 1, 1]],
        [[2, 2, 2, 2], [0, 0, 0, 0]],
        [[255] * 4, [255] * 4],
    ]
)
PREDICTIONS = torch.tensor(
    [
        [[0, 2, 1, 1], [0, 0, 1, 1]],
        [[2, 2, 2, 2], [0, 0, 0, 0]],
        [[1] * 4, [1] * 4],
    ]
)


def test_per_image_records_against_a_hand_computation():
    scores = ImageScores(3, keep=2)
    scores.update(PREDICTIONS, LABELS, ["a", "b", "c"], [0, 1, 2])
    first, second, empty = scores.records
    # Image a, 7 labelled pixels: class 0 has 3, one predicted as 2; class 1 has 4, all right
    # (the 0 on the ignored pixel does not count). IoU 0: 2/3, 1: 4/4, 2: 0/1 → mIoU 5/9;
    # 6/7 right; 1/7 out of context (class 2 is not in the label).
    assert (first.name, first.pixels, first.classes) == ("a", 7, (0, 1))
    assert first.predicted == (0, 1, 2)
    assert first.miou == pytest.approx(5 / 9) and first.pixel_acc == pytest.approx(6 / 7)
    assert first.out_of_context == pytest.approx(1 / 7) and first.out_of_context_classes == (2,)
    assert (second.miou, second.pixel_acc, second.out_of_context) == (1.0, 1.0, 0.0)
    assert (empty.pixels, empty.miou, empty.pixel_acc) == (0, None, None)  # nothing labelled
    assert [entry.record.name for entry in scores.worst()] == ["a", "b"]  # c has no mIoU
    kept = scores.worst()[0]
    np.testing.assert_array_equal(kept.label, LABELS[0].numpy().astype(np.uint8))
    np.testing.assert_array_equal(kept.prediction, PREDICTIONS[0].numpy().astype(np.uint8))
    rows = list(csv.DictReader(io.StringIO(per_image_csv(scores.records, ["bg", "x", "y"]))))
    assert len(rows) == 3 and rows[0]["mIoU"] == "0.555556" and rows[2]["mIoU"] == ""
    assert rows[0]["classes"] == "bg;x" and rows[0]["predicted_classes"] == "bg;x;y"


def test_the_worst_images_stay_k_and_are_the_same_however_the_split_is_shared():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (40, 30, 40), generator=generator)
    predictions = torch.where(
        torch.rand(labels.shape, generator=generator) < torch.linspace(0, 0.9, 40).view(-1, 1, 1),
        torch.randint(0, 4, labels.shape, generator=generator),
        labels,
    )
    whole = ImageScores(4, keep=3)
    for index in range(40):
        whole.update(predictions[index], labels[index], [f"i{index}"], [index])
    by_miou = sorted(whole.records, key=lambda r: (r.miou, r.index))
    assert [e.record.index for e in whole.worst()] == [r.index for r in by_miou[:3]]
    assert len(whole.heap) == 3
    shares = [ImageScores(4, keep=3) for _ in range(3)]  # every third image, as shard() does
    for index in range(40):
        shares[index % 3].update(predictions[index], labels[index], [f"i{index}"], [index])
    merged = ImageScores.merged(shares)
    assert merged.records == whole.records
    assert [e.record for e in merged.worst()] == [e.record for e in whole.worst()]


def test_a_large_image_is_kept_small():
    scores = ImageScores(2, keep=1)
    label = torch.zeros(1000, 1500, dtype=torch.int64)
    label[:, 750:] = 1
    scores.update(torch.zeros_like(label), label)
    kept = scores.worst()[0]
    assert kept.label.shape == (171, 256) and kept.label.dtype == np.uint8
    assert set(np.unique(kept.label)) == {0, 1} and not kept.prediction.any()


def test_the_error_map_colours_wrong_pixels_by_the_prediction():
    palette = [(0, 0, 0), (200, 0, 0), (0, 0, 200)]
    label = np.array([[0, 1, 255]], dtype=np.uint8)
    prediction = np.array([[0, 2, 1]], dtype=np.uint8)
    errors = error_map(label, prediction, palette)
    assert errors[0, 0].tolist() == [191, 191, 191]  # right: black faded ¾ of the way to white
    assert errors[0, 1].tolist() == [0, 0, 200]  # wrong: the class predicted
    assert errors[0, 2].tolist() == list(IGNORE_COLOUR)


# --- report.html through the commands and the API -----------------------------------------------


def pictures(html: str) -> list[Image.Image]:
    """Every inline picture of a page, decoded."""
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in found]


def assert_self_contained(html: str, class_names: list[str]) -> None:
    """No script and nothing from the network; every class in the per-class table; every
    <img> an inline PNG that decodes."""
    lowered = html.lower()
    assert "<script" not in lowered and "http://" not in lowered and "https://" not in lowered
    table = html.split('<table id="classes">')[1].split("</table>")[0]
    for name in class_names:
        assert f"</span>{name}</td>" in table, name
    assert html.count("<img ") == len(pictures(html)) > 0
    for picture in pictures(html):
        picture.load()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained by parsenet-train (2 iterations, 5 validation images)."""
    root = tmp_path_factory.mktemp("report_run")
    run_cli(
        "train",
        *TINY_MODEL,
        *TINY_SYNTHETIC,
        "data.num_val=5",
        "optim=adamw",
        "train.max_iters=2",
        "train.batch_size=2",
        "train.num_overlays=0",
        "train.report_worst=3",
        f"paths.data_root={root / 'data'}",
        f"hydra.run.dir={root / 'run'}",
        check=True,
    )
    return root


def test_training_writes_the_report_of_its_final_evaluation(trained: Path):
    run = trained / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["boundary_iou"] <= 1 and len(metrics["per_class_boundary_iou"]) == 5
    with open(run / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["num_images"] == 5
    mean = np.mean([float(row["mIoU"]) for row in rows])
    assert 0 <= mean <= 1 and rows[0]["name"] == "val_00000"
    html = (run / "report.html").read_text()
    names = dataset_info({"name": "synthetic"}).class_names
    assert_self_contained(html, list(names))
    assert html.count('class="card" id="image-') == 3  # train.report_worst
    assert f"{100 * metrics['mIoU']:.2f} %" in html


def test_eval_writes_the_report_and_the_setting_turns_it_off(trained: Path, tmp_path: Path):
    checkpoint = trained / "run" / "checkpoints" / "last.pt"
    out = tmp_path / "eval"
    result = run_cli(
        "eval", f"checkpoint={checkpoint}", "data.num_workers=0", f"hydra.run.dir={out}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"report: {out / 'report.html'}" in result.stdout and "bIoU" in result.stdout
    html = (out / "report.html").read_text()
    assert_self_contained(html, list(dataset_info({"name": "synthetic"}).class_names))
    assert html.count('class="card" id="image-') == 5  # report_worst=8, 5 images
    for field in ("checkpoint", "images scored", "inference", "training seed", "code commit"):
        assert f'<th scope="row">{field}</th>' in html
    with open(out / "per_image.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 5
    off = tmp_path / "off"
    run_cli("eval", f"checkpoint={checkpoint}", "report=false", f"hydra.run.dir={off}", check=True)
    assert (off / "metrics.json").is_file() and not (off / "report.html").exists()
    for setting, line in (
        ("report_worst=-1", "report_worst=-1 must be a whole number ≥ 0"),
        ("report=sometimes", "report='sometimes' must be true or false"),
    ):
        with pytest.raises(ConfigError, match=line):  # what the command checks before it runs
            check_config(parsenet.compose("eval", [f"checkpoint={checkpoint}", setting]))


def test_the_api_writes_the_report_unless_told_not_to(trained: Path, tmp_path: Path):
    checkpoint = trained / "run" / "checkpoints" / "last.pt"
    result = parsenet.evaluate(checkpoint, data={"num_workers": 0}, device="cpu", report_worst=2)
    written = result.write(tmp_path / "api")
    assert written["report"] == tmp_path / "api" / "report.html"
    assert written["report"].read_text().count('class="card" id="image-') == 2
    assert len(result.images.records) == result.num_images == 5
    quiet = result.write(tmp_path / "quiet", report=False)
    assert "report" not in quiet and not (tmp_path / "quiet" / "report.html").exists()
    assert (tmp_path / "quiet" / "per_image.csv").is_file()


def voc_predictions(root: Path, count: int) -> tuple[Path, list[str]]:
    """A VOC val split of ``count`` 40×30 images and a folder of predictions for it (the label
    with a block of class 7 and the ignored band as background)."""
    write_voc_tree(root, {"train": 1, "val": count})
    base = root / "VOCdevkit" / "VOC2012"
    ids = (base / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    for index, sample_id in enumerate(ids):
        label = np.asarray(Image.open(base / "SegmentationClass" / f"{sample_id}.png")).copy()
        label[label == 255] = 0
        label[: 2 + index % 20, :10] = 7
        write_palette_png(label, root / "predictions" / f"{sample_id}.png")
    return root / "predictions", ids


def test_a_split_of_many_images_gives_a_report_of_bounded_size(tmp_path: Path):
    sizes = {}
    for count in (12, 120):
        folder, ids = voc_predictions(tmp_path / str(count), count)
        root = str(tmp_path / str(count))
        data = {**parsenet.compose("eval", ["data=voc"])["data"], "root": root}
        result = parsenet.score_predictions(folder, data, report_worst=4)
        written = result.write(tmp_path / f"out{count}")
        html = written["report"].read_text()
        sizes[count] = len(html)
        assert html.count("<img ") == 1 + 4 * 4  # the confusion matrix, 4 images × 4 panels
        with open(written["per_image"], newline="") as handle:
            assert [row["name"] for row in csv.DictReader(handle)] == ids
        assert_self_contained(html, list(dataset_info(data).class_names))
    assert sizes[120] < 1.2 * sizes[12]  # ten times the images, about the same page


def test_training_reads_the_report_settings(tmp_path: Path):
    settings = TrainSettings.from_config(
        compose_train(tmp_path, "train.report=false", "train.report_worst=2")
    )
    assert settings.report is False and settings.report_worst == 2  # the trainer's write() flag
    with pytest.raises(ConfigError, match="train.report='sometimes' must be true or false"):
        TrainSettings.from_config(compose_train(tmp_path, "train.report=sometimes"))

"""The real command-line tools, run in subprocesses: a tiny train → eval cycle and bad inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    TINY_MODEL,
    TINY_SYNTHETIC,
    assert_one_line_error,
    run_cli,
    write_palette_png,
    write_voc_tree,
)
from PIL import Image

METRIC_KEYS = {
    "mIoU",
    "pixel_acc",
    "mean_acc",
    "fwIoU",
    "per_class_iou",
    "num_images",
    "mode",
    "checkpoint",
    "dataset",
    "split",
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A ParseNet trained for 4 iterations on a tiny synthetic set, evaluated twice on the way."""
    base = tmp_path_factory.mktemp("cli")
    run_dir = base / "run"
    result = run_cli(
        "parsenet-train",
        *TINY_MODEL,
        *TINY_SYNTHETIC,
        f"paths.data_root={base / 'data'}",
        "train.max_iters=4",
        "train.batch_size=2",
        "train.eval_every=2",
        "train.log_every=2",
        "train.num_overlays=2",
        "optim=adamw",
        f"hydra.run.dir={run_dir}",
        check=True,
    )
    assert "mIoU" in result.stdout and "buoy" in result.stdout
    return run_dir


def test_train_writes_the_run_folder(trained_run: Path):
    assert (trained_run / "checkpoints" / "last.pt").is_file()
    assert (trained_run / "checkpoints" / "best.pt").is_file()
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    assert len(list((trained_run / "overlays").glob("*.png"))) == 2
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["dataset"] == "synthetic" and metrics["split"] == "val"
    assert metrics["num_images"] == 6 and metrics["mode"] == "whole"
    assert set(metrics["per_class_iou"]) == {"background", "boat", "car", "buoy", "sign"}
    for key in ("mIoU", "pixel_acc", "mean_acc", "fwIoU"):
        assert 0.0 <= metrics[key] <= 1.0


def test_eval_reproduces_the_final_metrics(trained_run: Path, tmp_path: Path):
    result = run_cli(
        "parsenet-eval",
        f"checkpoint={trained_run / 'checkpoints' / 'last.pt'}",
        f"hydra.run.dir={tmp_path}",
        check=True,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["checkpoint"].endswith("last.pt")
    for key in ("mIoU", "pixel_acc", "mean_acc", "fwIoU", "per_class_iou"):
        assert metrics[key] == pytest.approx(trained[key]), key
    assert "mIoU" in result.stdout and "mode whole" in result.stdout


def test_eval_with_mismatching_classes(trained_run: Path, voc_root: Path, tmp_path: Path):
    result = run_cli(
        "parsenet-eval",
        f"checkpoint={trained_run / 'checkpoints' / 'best.pt'}",
        "data=voc",
        f"data.root={voc_root}",
        f"hydra.run.dir={tmp_path}",
    )
    assert_one_line_error(result, "predicts 5 classes", "has 21")
    assert not (tmp_path / "metrics.json").exists()


def test_eval_with_mismatching_architecture(trained_run: Path, tmp_path: Path):
    result = run_cli(
        "parsenet-eval",
        f"checkpoint={trained_run / 'checkpoints' / 'best.pt'}",
        "model=fcn",
        f"hydra.run.dir={tmp_path}",
    )
    assert_one_line_error(result, "holds a parsenet model that does not fit model=fcn")


def test_eval_with_damaged_or_missing_checkpoint(trained_run: Path, tmp_path: Path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((trained_run / "checkpoints" / "last.pt").read_bytes()[:5000])
    result = run_cli("parsenet-eval", f"checkpoint={damaged}", f"hydra.run.dir={tmp_path / 'o'}")
    assert_one_line_error(result, "damaged.pt cannot be read")
    result = run_cli("parsenet-eval", f"hydra.run.dir={tmp_path / 'o'}")
    assert_one_line_error(result, "pass checkpoint=PATH, or predictions=DIR")


def test_unknown_config_key_and_option(tmp_path: Path):
    result = run_cli("parsenet-train", "train.max_itres=5", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "unknown config key 'train.max_itres'")
    result = run_cli("parsenet-train", "model=unet", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(
        result, "model=unet is not a config", "fcn, fcn32s, from_checkpoint, parsenet"
    )
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("command", "override", "line"),
    [
        (
            "parsenet-train",
            "train.eval.mode=slide",
            "error: train.eval.mode was renamed: use inference=slide (or inference.mode=slide)",
        ),
        (
            "parsenet-predict",
            "slide.crop=256",
            "error: slide.crop was renamed: use inference.slide.crop=256",
        ),
    ],
)
def test_a_renamed_key_is_one_line_naming_the_new_one(
    tmp_path: Path, command: str, override: str, line: str
):
    result = run_cli(command, override, f"hydra.run.dir={tmp_path / 'run'}")
    assert assert_one_line_error(result) == line
    assert not (tmp_path / "run").exists()


def _train_voc(root: Path, tmp_path: Path, *extra: str):
    return run_cli(
        "parsenet-train",
        "data=voc",
        f"data.root={root}",
        *TINY_MODEL,
        "train.max_iters=1",
        "train.batch_size=1",
        "data.augment.crop_size=32",
        "data.num_workers=0",
        f"hydra.run.dir={tmp_path / 'run'}",
        *extra,
    )


def test_missing_data_root_says_how_to_get_data(tmp_path: Path):
    result = _train_voc(tmp_path / "nowhere", tmp_path)
    assert_one_line_error(result, "nowhere", "VOCdevkit", "data/README.md")


def test_missing_split_file(voc_root: Path, tmp_path: Path):
    result = _train_voc(voc_root, tmp_path, "data.train_split=trainval")
    assert_one_line_error(result, "trainval.txt does not exist")


def test_image_without_its_label(voc_root: Path, tmp_path: Path):
    (voc_root / "VOCdevkit/VOC2012/SegmentationClass/2007_val_001.png").unlink()
    result = _train_voc(voc_root, tmp_path)
    assert_one_line_error(result, "2007_val_001.png does not exist")


@pytest.mark.parametrize("workers", [0, 1])
def test_size_mismatch_inside_loader_workers(voc_root: Path, tmp_path: Path, workers: int):
    label_dir = voc_root / "VOCdevkit/VOC2012/SegmentationClass"
    for index in range(4):
        write_palette_png(np.zeros((7, 9)), label_dir / f"2007_train_{index:03d}.png")
    result = _train_voc(voc_root, tmp_path, f"data.num_workers={workers}")
    assert_one_line_error(result, "is 40×30 but its label", "is 9×7")


def test_colour_label(voc_root: Path, tmp_path: Path):
    label_dir = voc_root / "VOCdevkit/VOC2012/SegmentationClass"
    for index in range(4):
        path = label_dir / f"2007_train_{index:03d}.png"
        Image.open(path).convert("RGB").save(path)
    result = _train_voc(voc_root, tmp_path)
    assert_one_line_error(result, "mode-RGB", "class indices")


def test_multirun_makes_one_run_folder_per_model(tmp_path: Path):
    run_cli(
        "parsenet-train", "-m", "model=parsenet,fcn", *TINY_MODEL, *TINY_SYNTHETIC,
        f"paths.data_root={tmp_path / 'data'}", "train.max_iters=1", "train.batch_size=2",
        "train.num_overlays=0", f"hydra.sweep.dir={tmp_path / 'sweep'}", check=True,
    )  # fmt: skip
    for folder in ("0_parsenet_synthetic", "1_fcn_synthetic"):
        metrics = json.loads((tmp_path / "sweep" / folder / "metrics.json").read_text())
        assert metrics["dataset"] == "synthetic"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.batch_size=0", "train.batch_size=0 must be a whole number ≥ 1"),
        ("train.max_iters=abc", "train.max_iters='abc' must be a whole number"),
        ("data.num_workers=-1", "data.num_workers=-1 must be a whole number ≥ 0"),
        ("model.backbone.width_mult=0", "backbone.width_mult must be positive"),
        ("device=mps", "device='mps' is not supported"),
        ("train.batch_size=99", "has 16 images, fewer than train.batch_size=99"),
    ],
)
def test_bad_training_settings(tmp_path: Path, override: str, fragment: str):
    result = run_cli(
        "parsenet-train", *TINY_MODEL, *TINY_SYNTHETIC, f"paths.data_root={tmp_path / 'data'}",
        "train.max_iters=1", override, f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_unknown_key_in_a_multirun(tmp_path: Path):
    result = run_cli(
        "parsenet-train", "-m", "model=parsenet,fcn", "train.max_itres=5",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )  # fmt: skip
    assert_one_line_error(result, "unknown config key 'train.max_itres'")


def test_whole_images_of_different_sizes_in_one_batch(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "val": 1})
    write_voc_tree(tmp_path / "voc", {"train": 2}, size=(24, 20), seed=1)  # same ids, new sizes
    base = root / "VOCdevkit/VOC2012"
    (base / "ImageSets/Segmentation/train.txt").write_text("2007_train_000\n2007_train_001\n")
    write_voc_tree(tmp_path / "other", {"train": 1}, size=(40, 30))
    for suffix, folder in ((".jpg", "JPEGImages"), (".png", "SegmentationClass")):
        source = tmp_path / "other/VOCdevkit/VOC2012" / folder / f"2007_train_000{suffix}"
        (base / folder / f"2007_train_001{suffix}").write_bytes(source.read_bytes())
    result = _train_voc(root, tmp_path, "data.augment.crop_size=null", "train.batch_size=2")
    assert_one_line_error(result, "a batch mixes image sizes", "train.batch_size=1")


def test_empty_split_file(voc_root: Path, tmp_path: Path):
    (voc_root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").write_text("\n")
    assert_one_line_error(_train_voc(voc_root, tmp_path), "train.txt lists no images")


def test_checkpoint_that_is_a_folder(tmp_path: Path):
    result = run_cli("parsenet-eval", f"checkpoint={tmp_path}", f"hydra.run.dir={tmp_path / 'o'}")
    assert_one_line_error(result, "is not a file")

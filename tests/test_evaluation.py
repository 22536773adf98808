"""Evaluation modes, scoring saved predictions, the confusion outputs, distributed evaluation."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, TINY_SYNTHETIC, compose_train, run_cli, write_palette_png
from torchmetrics.classification import MulticlassJaccardIndex

from parsenet.engine.scoring.inference import InferenceMode
from parsenet.engine.training.trainer import Trainer
from parsenet.metrics import ConfusionMatrix
from parsenet.models import build_model


def test_iou_agrees_with_torchmetrics():
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randint(0, 5, (4, 30, 40), generator=generator)
    label = torch.randint(0, 5, (4, 30, 40), generator=generator)
    label[torch.rand(label.shape, generator=generator) < 0.2] = 255
    ours = ConfusionMatrix(5)
    ours.update(prediction, label)
    scores = ours.compute([str(i) for i in range(5)])
    reference = MulticlassJaccardIndex(num_classes=5, average=None, ignore_index=255)
    expected = reference(prediction, label)
    got = torch.tensor([scores["per_class_iou"][str(i)] for i in range(5)], dtype=torch.float32)
    torch.testing.assert_close(got, expected)
    assert scores["mIoU"] == pytest.approx(expected.mean().item())


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model({"backbone": {"width_mult": 0.0625}}, 4).eval()


def test_slide_with_a_window_over_the_whole_image_equals_whole(tiny_model):
    images = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        whole = InferenceMode("whole").scores(tiny_model, images)
        slide = InferenceMode("slide", crop=80, stride=80).scores(tiny_model, images)
    torch.testing.assert_close(slide, whole)


def test_slide_averages_overlapping_windows_exactly():
    pointwise = torch.nn.Conv2d(3, 4, 1)  # windows see what the whole image sees
    images = torch.randn(2, 3, 50, 73)
    with torch.no_grad():
        slide = InferenceMode("slide", crop=16, stride=10).scores(pointwise, images)
        torch.testing.assert_close(slide, pointwise(images))


def test_msflip_with_one_scale_and_no_flip_equals_whole(tiny_model):
    images = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        whole = tiny_model(images).softmax(dim=1)
        single = InferenceMode("msflip", scales=(1.0,), flip=False).scores(tiny_model, images)
        many = InferenceMode("msflip", scales=(0.5, 1.0, 1.5), flip=True).scores(tiny_model, images)
    torch.testing.assert_close(single, whole)
    assert many.shape == whole.shape
    torch.testing.assert_close(many.sum(dim=1), torch.ones(1, 45, 70))


def test_msflip_averages_the_probabilities_of_every_view():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 20, 30)
    # 1×3 kernels: the flipped view's probabilities, flipped back, differ from the plain view's
    lopsided = torch.nn.Conv2d(3, 4, (1, 3), padding=(0, 1))
    pointwise = torch.nn.Conv2d(3, 4, 1)  # its half-size view, by hand, is one resize each way
    with torch.no_grad():
        plain = lopsided(images).softmax(dim=1)
        flipped = lopsided(images.flip(-1)).softmax(dim=1).flip(-1)
        flip = InferenceMode("msflip", scales=(1.0,), flip=True).scores(lopsided, images)

        full = pointwise(images).softmax(dim=1)
        half = F.interpolate(images, (10, 15), mode="bilinear", align_corners=False)
        half = pointwise(half).softmax(dim=1)
        half = F.interpolate(half, (20, 30), mode="bilinear", align_corners=False)
        scales = InferenceMode("msflip", scales=(0.5, 1.0), flip=False).scores(pointwise, images)
    assert not torch.allclose(plain, flipped, atol=1e-2)
    torch.testing.assert_close(flip, (plain + flipped) / 2)
    assert not torch.allclose(full, half, atol=1e-2)
    torch.testing.assert_close(scales, (full + half) / 2)


def test_slide_on_a_2000_pixel_image(tiny_model):
    images = torch.randn(1, 3, 2000, 2000)
    with torch.no_grad():
        scores = InferenceMode("slide", crop=512, stride=341).scores(tiny_model, images)
    assert scores.shape == (1, 4, 2000, 2000) and torch.isfinite(scores).all()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny model trained for 2 iterations on a synthetic set with 5 (odd) validation images."""
    root = tmp_path_factory.mktemp("eval")
    cfg = compose_train(root, "train.max_iters=2", "data.num_val=5")
    Trainer(cfg, root / "run").run()
    return root


def eval_overrides(root: Path, *extra: str) -> list[str]:
    return [
        f"checkpoint={root / 'run' / 'checkpoints' / 'last.pt'}",
        "data.num_workers=0",
        *extra,
    ]


def test_eval_modes_write_metrics_and_confusion(trained: Path):
    for mode, extra in (
        ("whole", []),
        ("slide", ["inference.slide.crop=32", "inference.slide.stride=20"]),
        ("msflip", ["inference.msflip.scales=[0.75,1.0]"]),
    ):
        out = trained / f"eval_{mode}"
        result = run_cli(
            "parsenet-eval",
            *eval_overrides(trained, f"inference={mode}", *extra),
            f"hydra.run.dir={out}",
        )
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["mode"] == mode and metrics["inference"]["mode"] == mode
        assert f"mode {mode}" in result.stdout and "IoU     acc" in result.stdout
        matrix = np.load(out / "confusion.npy")
        assert matrix.shape == (5, 5) and matrix.dtype == np.int64
        assert (out / "confusion.png").stat().st_size > 1000
    slide = json.loads((trained / "eval_slide" / "metrics.json").read_text())
    assert slide["inference"] == {"mode": "slide", "crop": 32, "stride": 20}


def test_scoring_saved_predictions_equals_evaluating_the_model(trained: Path):
    from parsenet.data import build_dataset
    from parsenet.data.normalization import get_normalization
    from parsenet.data.transforms import eval_transform
    from parsenet.engine.runtime.checkpoint import load_checkpoint, restore_model

    path = trained / "run" / "checkpoints" / "last.pt"
    checkpoint = load_checkpoint(path)
    model = restore_model(checkpoint, path).eval()
    data_cfg = checkpoint["config"]["data"]
    transform = eval_transform(get_normalization(checkpoint["config"]["model"]["input_norm"]))
    dataset = build_dataset(data_cfg, "val", transform)
    folder = trained / "predictions"
    for index in range(len(dataset)):
        with torch.no_grad():
            logits = model(dataset[index]["image"].unsqueeze(0))
        write_palette_png(logits.argmax(1)[0].numpy(), folder / f"{dataset.sample_name(index)}.png")
    data = ["data=synthetic", f"data.root={data_cfg['root']}", *TINY_SYNTHETIC, "data.num_val=5"]
    scored = run_cli(
        "parsenet-eval", f"predictions={folder}", *data, f"hydra.run.dir={trained / 'scored'}"
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    evaluated = run_cli(
        "parsenet-eval", *eval_overrides(trained), f"hydra.run.dir={trained / 'evaluated'}"
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    np.testing.assert_array_equal(
        np.load(trained / "scored" / "confusion.npy"),
        np.load(trained / "evaluated" / "confusion.npy"),
    )
    assert json.loads((trained / "scored" / "metrics.json").read_text())["mode"] == "predictions"
    (folder / f"{dataset.sample_name(0)}.png").unlink()
    missing = run_cli(
        "parsenet-eval", f"predictions={folder}", *data, f"hydra.run.dir={trained / 'm'}"
    )
    assert missing.returncode == 2 and "is missing" in missing.stderr


def test_two_processes_count_every_image_once(trained: Path):
    """5 validation images over 2 gloo processes give the 1-process confusion matrix."""
    out = trained / "two"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "parsenet.cli.evaluate", *eval_overrides(trained), f"hydra.run.dir={out}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one = trained / "one"
    run_cli("parsenet-eval", *eval_overrides(trained), f"hydra.run.dir={one}", check=True)
    np.testing.assert_array_equal(np.load(out / "confusion.npy"), np.load(one / "confusion.npy"))
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 5
    two_metrics, one_metrics = (json.loads((d / "metrics.json").read_text()) for d in (out, one))
    assert two_metrics["per_class_boundary_iou"] == one_metrics["per_class_boundary_iou"]
    # The per-image records gathered from both processes, in split order, and the same worst
    # images in the report.
    assert (out / "per_image.csv").read_text() == (one / "per_image.csv").read_text()
    worst = [re.findall(r'id="image-(\d+)"', (d / "report.html").read_text()) for d in (out, one)]
    assert worst[0] == worst[1] and len(worst[0]) == 5


def test_bad_eval_settings_are_one_line(trained: Path, tmp_path: Path):
    from conftest import assert_one_line_error

    out = f"hydra.run.dir={tmp_path / 'o'}"
    result = run_cli("parsenet-eval", *eval_overrides(trained, "inference.mode=tiles"), out)
    assert_one_line_error(result, "inference.mode='tiles' is not one of")
    stride = ("inference=slide", "inference.slide.stride=0")
    result = run_cli("parsenet-eval", *eval_overrides(trained, *stride), out)
    assert_one_line_error(result, "inference.slide.stride=0 must be in 1…inference.slide.crop=512")
    result = run_cli("parsenet-eval", f"predictions={tmp_path}", out)
    assert_one_line_error(result, "predictions=DIR needs the data to score against")


def test_predict_on_a_folder_with_a_corrupt_file(trained: Path):
    from PIL import Image

    inputs = trained / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a": (30, 40), "b": (30, 40), "c": (17, 61)}
    for name, (height, width) in sizes.items():
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(inputs / f"{name}.jpg")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (inputs / "notes.txt").write_text("not an image")
    out = trained / "predicted"
    result = run_cli(
        "parsenet-predict",
        f"checkpoint={trained / 'run' / 'checkpoints' / 'last.pt'}",
        f"inputs={inputs}",
        "batch_size=2",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "predicted 3 image(s)" in result.stdout
    assert "skipped 1 unreadable file(s)" in result.stdout and "broken.jpg" in result.stdout
    for name, (height, width) in sizes.items():
        with Image.open(out / "labels" / f"{name}.png") as label:
            assert label.mode == "P" and label.size == (width, height)
            assert np.asarray(label).max() < 5
        with Image.open(out / "side_by_side" / f"{name}.png") as side:
            assert side.size == (2 * width + 4, height)
        assert (out / "overlays" / f"{name}.png").is_file()
    checkpoint = f"checkpoint={trained / 'run' / 'checkpoints' / 'last.pt'}"
    glob_run = run_cli(
        "parsenet-predict", checkpoint, f"inputs={inputs}/c*.jpg", f"hydra.run.dir={out}_glob"
    )
    assert glob_run.returncode == 0 and "predicted 1 image(s)" in glob_run.stdout
    nothing = run_cli(
        "parsenet-predict", checkpoint, f"inputs={inputs}/*.gif", f"hydra.run.dir={out}_none"
    )
    assert nothing.returncode == 2 and "no image files there" in nothing.stderr


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_checks_parity_on_two_sizes(trained: Path, fmt: str):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    out = trained / f"export_{fmt}"
    result = run_cli(
        "parsenet-export",
        f"checkpoint={trained / 'run' / 'checkpoints' / 'last.pt'}",
        f"format={fmt}",
        "check_sizes=[[45,61],[100,33]]",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("same argmax on 100.000 %") == 2
    report = json.loads((out / "export.json").read_text())
    assert [r["size"] for r in report["parity"]] == [[45, 61], [100, 33]]
    assert all(r["max_abs_diff"] < 1e-3 for r in report["parity"])
    assert report["input_norm"]["name"] == "torchvision" and len(report["class_names"]) == 5
    assert Path(report["file"]).is_file()

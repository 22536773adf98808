"""parsenet-data verify and show, the folder dataset, and data.on_bad_sample=raise|skip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODEL, assert_one_line_error, run_cli, write_palette_png, write_voc_tree
from PIL import Image

from parsenet.cli.data import main as data_main
from parsenet.data import build_dataset
from parsenet.data.loader import collate_samples
from parsenet.data.sampling import SeededSamples
from parsenet.errors import DataError


def voc_base(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


def damage(root: Path) -> dict[str, str]:
    """Break six training pairs of a VOC tree, one way each; returns id → what is wrong."""
    base = voc_base(root)
    ids = (base / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    (base / "JPEGImages" / f"{ids[0]}.jpg").unlink()
    (base / "SegmentationClass" / f"{ids[1]}.png").unlink()
    jpeg = base / "JPEGImages" / f"{ids[2]}.jpg"
    encoded = jpeg.read_bytes()
    jpeg.write_bytes(encoded[: len(encoded) * 6 // 10])  # truncated in the middle of the scan
    write_palette_png(np.zeros((10, 10)), base / "SegmentationClass" / f"{ids[3]}.png")
    write_palette_png(np.full((30, 40), 50), base / "SegmentationClass" / f"{ids[4]}.png")
    Image.new("RGB", (40, 30), (128, 0, 0)).save(base / "SegmentationClass" / f"{ids[5]}.png")
    return {
        ids[0]: "does not exist",
        ids[1]: "does not exist",
        ids[2]: "cannot read image",
        ids[3]: "is 40×30 but its label",
        ids[4]: "holds values 50",
        ids[5]: "mode-RGB",
    }


def test_verify_reports_every_kind_of_bad_file_and_fails(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 9, "val": 2})
    broken = damage(root)
    result = run_cli("data", "verify", "voc", "--root", str(root))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "train" in out and "bad files: 6" in out
    lines = out.splitlines()
    for image_id, problem in broken.items():
        assert any(image_id in line and problem in line for line in lines), (image_id, out)
    assert split_rows(out) == {"train": ["9", "6"], "val": ["2", "0"]}


def test_verify_passes_a_good_tree_with_a_class_table(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 3, "val": 2})
    result = run_cli("data", "verify", "voc", "--root", str(root), check=True)
    assert "bad files: 0" in result.stdout
    assert "aeroplane" in result.stdout and "ignored" in result.stdout


def test_verify_names_a_missing_split_file(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2})
    result = run_cli("data", "verify", "voc", "--root", str(root))
    assert result.returncode == 1
    assert "split file" in result.stdout and "val.txt does not exist" in result.stdout


def test_data_cli_mistakes_are_one_line_errors(tmp_path: Path):
    result = run_cli("data", "show", "voc", "--root", str(tmp_path / "nowhere"))
    assert_one_line_error(result, "data.root=", "VOCdevkit")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["show", "camvid", "--n", "0"], "argument --n: '0' is not a whole number ≥ 1"),
        (["show", "camvid", "--columns", "-1"], "argument --columns"),
        (["show", "camvid", "--out", "grid.txt"], "--out grid.txt: write a .png"),
        (["prepare", "voc", "--root", "/proc/parsenet"], "cannot use /proc/parsenet"),
    ],
)
def test_data_cli_argument_mistakes(args: list[str], fragment: str, capsys):
    with pytest.raises(SystemExit) as stop:
        data_main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0] and "usage:" not in err, err


def env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (.ci/run sets it to ../shared/datasets/…)")
    return Path(value)


def split_rows(report: str) -> dict[str, list[str]]:
    """The per-split table of a verify report: split → [pairs, bad]."""
    lines = report.split("\n\n")[1].splitlines()[1:]
    return {line.split()[0]: line.split()[1:] for line in lines}


def test_verify_real_camvid_all_468_pairs():
    root = env_path("PARSENET_CAMVID")
    result = run_cli("data", "verify", "camvid", "--root", str(root), check=True)
    rows = split_rows(result.stdout)
    assert rows["train"] == ["367", "0"] and rows["val"] == ["101", "0"]
    assert "bad files: 0" in result.stdout


@pytest.mark.parametrize(
    ("name", "train_split", "count"), [("voc", "train", 437), ("voc_aug", "train_aug", 587)]
)
def test_verify_real_voc_sample(name, train_split, count):
    root = env_path("PARSENET_VOC")
    result = run_cli("data", "verify", name, "--root", str(root), check=True)
    rows = split_rows(result.stdout)
    assert rows[train_split] == [str(count), "0"] and rows["val"] == ["149", "0"]


def test_show_writes_a_grid_with_a_legend(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 5, "val": 2}, size=(40, 30))
    out = tmp_path / "grid.png"
    run_cli("data", "show", "voc", "--root", str(root), "--n", "4", "--out", str(out), check=True)
    with Image.open(out) as grid:
        width, height = grid.size
    # two rows of two (image | overlay) panels at 200 px, then the legend
    assert height > 2 * 200 and width >= 2 * (2 * 267)


def test_show_real_camvid(tmp_path: Path):
    root = env_path("PARSENET_CAMVID")
    out = tmp_path / "camvid.png"
    run_cli(
        "data", "show", "camvid", "--root", str(root), "--n", "2", "--out", str(out), check=True
    )
    assert out.stat().st_size > 10_000


# --- the folder dataset --------------------------------------------------------------------------


def write_folder_dataset(root: Path, classes_yaml: str, counts=None) -> Path:
    """images/ + masks/ + list files + classes.yaml, 3 classes."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for split, count in (counts or {"train": 4, "val": 2}).items():
        ids = [f"{split}_{index}" for index in range(count)]
        for image_id in ids:
            image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / f"{image_id}.jpg")
            label = rng.integers(0, 3, size=(24, 32)).astype(np.uint8)
            label[0] = 255
            Image.fromarray(label, mode="L").save(root / "masks" / f"{image_id}.png")
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (root / "classes.yaml").write_text(classes_yaml)
    return root


CLASSES_YAML = """name: roads
classes: [background, road, car]
palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
"""


def test_folder_dataset_trains_and_evaluates_with_its_own_classes(tmp_path: Path):
    root = write_folder_dataset(tmp_path / "roads", CLASSES_YAML)
    run_cli("data", "verify", "folder", "--root", str(root), check=True)
    run_dir = tmp_path / "run"
    run_cli(
        "parsenet-train",
        *TINY_MODEL,
        "data=folder",
        f"data.root={root}",
        "data.num_workers=0",
        "data.augment.crop_size=16",
        "train.max_iters=2",
        "train.batch_size=2",
        "train.num_overlays=0",
        f"hydra.run.dir={run_dir}",
        check=True,
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "roads"
    assert list(metrics["per_class_iou"]) == ["background", "road", "car"]
    checkpoint = run_dir / "checkpoints" / "last.pt"
    moved = root.rename(tmp_path / "moved")  # the class file travels with data.root
    result = run_cli(
        "parsenet-eval",
        f"checkpoint={checkpoint}",
        f"data.root={moved}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        check=True,
    )
    assert "car" in result.stdout and "images 2" in result.stdout


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("classes: [a, b]\npalette: [[0, 0, 0]]\n", "'palette' needs one [R, G, B]"),
        ("names: [a, b]\n", "expected a mapping with 'classes"),
        ("classes: [a, a]\n", "lists a name twice"),
        ("classes: [a, b]\nignore_index: 1\n", "'ignore_index'"),
        ("classes: [a, b]\nignore_index: 300\n", "'ignore_index' must be a label value 2–255"),
        ("classes: [a, b\n", "is not valid YAML"),
    ],
)
def test_a_bad_classes_file_is_one_line_naming_it(tmp_path: Path, content: str, fragment: str):
    root = write_folder_dataset(tmp_path / "mine", content)
    result = run_cli("data", "verify", "folder", "--root", str(root))
    assert_one_line_error(result, str(root / "classes.yaml"), fragment)


# --- data.on_bad_sample ------------------------------------------------------------------------


def numbered_tree(root: Path, count: int) -> Path:
    """A folder dataset where sample k's image is the grey value k and its label is all k % 3,
    so a pair's two halves can be matched."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    ids = [f"s{index}" for index in range(count)]
    for index, image_id in enumerate(ids):
        Image.fromarray(np.full((8, 8, 3), 10 * index, np.uint8)).save(
            root / "images" / f"{image_id}.png"
        )
        Image.fromarray(np.full((8, 8), index % 3, np.uint8), mode="L").save(
            root / "masks" / f"{image_id}.png"
        )
    (root / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "classes.yaml").write_text("classes: [a, b, c]\n")
    return root


def writable_pair(image: np.ndarray, label: np.ndarray) -> dict:
    """The untransformed pair, as arrays torch may share (decoded arrays can be read-only)."""
    return {"image": image.copy(), "label": label.copy()}


def folder_cfg(root: Path, on_bad_sample: str) -> dict:
    return {
        "name": "folder",
        "root": str(root),
        "classes": str(root / "classes.yaml"),
        "image_suffix": ".png",
        "on_bad_sample": on_bad_sample,
    }


def test_skip_replaces_a_bad_pair_with_the_next_whole_pair(tmp_path: Path):
    root = numbered_tree(tmp_path / "n", 5)
    (root / "images" / "s2.png").write_bytes(b"broken")
    (root / "masks" / "s3.png").unlink()
    dataset = SeededSamples(build_dataset(folder_cfg(root, "skip"), "train", writable_pair))
    sample = dataset[(2, 0)]
    assert sample["image"][0, 0, 0] == 40 and sample["label"][0, 0] == 4 % 3  # s4, whole
    assert len(sample["skipped"]) == 2
    assert "s2.png" in sample["skipped"][0] and "s3.png" in sample["skipped"][1]
    batch = collate_samples([dataset[(0, 0)], dataset[(2, 0)]])
    assert batch["image"].shape[0] == 2 and len(batch["skipped"]) == 2
    for image, label in zip(batch["image"], batch["label"], strict=True):
        assert int(image[0, 0, 0]) // 10 % 3 == int(label[0, 0])  # never misaligned


def test_raise_stops_at_the_first_bad_pair_and_skip_never_gives_up_silently(tmp_path: Path):
    root = numbered_tree(tmp_path / "n", 2)
    (root / "masks" / "s1.png").unlink()
    with pytest.raises(DataError, match="s1.png does not exist"):
        build_dataset(folder_cfg(root, "raise"), "train")
    (root / "images" / "s0.png").write_bytes(b"broken")
    everything_bad = SeededSamples(build_dataset(folder_cfg(root, "skip"), "train"))
    with pytest.raises(DataError, match="no sample of the dataset can be read"):
        everything_bad[(0, 0)]


def test_training_with_skip_logs_counts_and_reports_bad_files(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 6, "val": 3})
    base = voc_base(root)
    train_ids = (base / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    val_ids = (base / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    (base / "JPEGImages" / f"{train_ids[1]}.jpg").write_bytes(b"not a jpeg")
    (base / "SegmentationClass" / f"{val_ids[0]}.png").unlink()
    common = [
        *TINY_MODEL,
        "data=voc",
        f"data.root={root}",
        "data.num_workers=0",
        "data.augment.crop_size=16",
        "train.max_iters=4",
        "train.batch_size=2",
        "train.num_overlays=1",
    ]
    failed = run_cli("parsenet-train", *common, f"hydra.run.dir={tmp_path / 'raise'}")
    assert_one_line_error(failed, f"{val_ids[0]}.png does not exist")
    run_dir = tmp_path / "skip"
    result = run_cli(
        "parsenet-train", *common, "data.on_bad_sample=skip", f"hydra.run.dir={run_dir}", check=True
    )
    report = json.loads((run_dir / "metrics.json").read_text())["bad_samples"]
    assert report["skipped"] >= 2 and len(report["files"]) == 2
    assert any(f"{train_ids[1]}.jpg" in message for message in report["files"])
    assert any(f"{val_ids[0]}.png" in message for message in report["files"])
    output = (result.stdout + result.stderr).splitlines()
    warnings = [line for line in output if "skipped a bad sample" in line]
    assert len(warnings) == 2, output  # each file logged once
    assert any("epoch 1: 1 bad samples skipped so far (1 files)" in line for line in output)
    assert json.loads((run_dir / "metrics.json").read_text())["num_images"] == 2  # 3 − 1 skipped
    assert "bad samples from 2 files (data.on_bad_sample=skip)" in result.stdout
    evaluated = run_cli(
        "parsenet-eval",
        f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        check=True,
    )
    assert "skipped 1 bad samples from 1 files" in evaluated.stdout
    assert "images 2" in evaluated.stdout

"""User-reported data faults: odd folder names and ``~`` in ``--root``, split lists with a
byte-order mark or a repeated id, and 16-bit greyscale labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, write_voc_tree
from PIL import Image

from parsenet.data import build_dataset
from parsenet.data.base import read_label
from parsenet.errors import DataError

ODD_NAME = "My Data (copy), v2"
BOM = "\ufeff"


def split_list(root: Path, split: str = "train") -> Path:
    return root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / f"{split}.txt"


def label_file(root: Path, sample_id: str) -> Path:
    return root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{sample_id}.png"


def voc_cfg(root: Path) -> dict:
    return {"name": "voc", "root": str(root)}


# --- --root: paths never go through Hydra's override grammar -----------------------------------


def test_verify_and_show_accept_a_folder_name_with_parentheses_and_a_comma(tmp_path: Path):
    root = write_voc_tree(tmp_path / ODD_NAME, {"train": 3, "val": 2})
    result = run_cli("data", "verify", "voc", "--root", str(root), check=True)
    assert f"voc at {root}" in result.stdout and "bad files: 0" in result.stdout
    out = tmp_path / ODD_NAME / "grid.png"
    run_cli("data", "show", "voc", "--root", str(root), "--n", "2", "--out", str(out), check=True)
    width, height = Image.open(out).size
    assert (
        height >= 200 and width > height
    )  # image | label panels of 200-pixel height, side by side


def test_root_with_a_tilde_is_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    root = write_voc_tree(home / ODD_NAME, {"train": 2, "val": 1})
    monkeypatch.setenv("HOME", str(home))  # run_cli passes the environment on
    result = run_cli("data", "verify", "voc", "--root", f"~/{ODD_NAME}", check=True)
    assert f"voc at {root}" in result.stdout and "bad files: 0" in result.stdout


def test_the_class_file_of_folder_moves_with_an_odd_root(tmp_path: Path):
    root = tmp_path / ODD_NAME
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for sample_id in ("a", "b"):
        Image.new("RGB", (8, 6)).save(root / "images" / f"{sample_id}.jpg")
        Image.fromarray(np.ones((6, 8), np.uint8), mode="L").save(
            root / "masks" / f"{sample_id}.png"
        )
    for split in ("train", "val"):
        (root / f"{split}.txt").write_text("a\nb\n")
    (root / "classes.yaml").write_text("name: odd\nclasses: [background, thing]\n")
    result = run_cli("data", "verify", "folder", "--root", str(root), check=True)
    assert f"odd at {root}" in result.stdout and "bad files: 0" in result.stdout


# --- split lists: a byte-order mark, a repeated id ----------------------------------------------


def test_a_split_list_with_a_byte_order_mark_reads_its_first_id(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 3, "val": 2})
    train = split_list(root)
    train.write_text(BOM + train.read_text(), encoding="utf-8")
    dataset = build_dataset(voc_cfg(root), "train")
    assert dataset.sample_name(0) == "2007_train_000"
    image, label = dataset.load_pair(0)
    assert image.shape[:2] == label.shape
    result = run_cli("data", "verify", "voc", "--root", str(root), check=True)
    assert "bad files: 0" in result.stdout


def test_a_split_list_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "val": 1})
    split_list(root).write_bytes(b"2007_train_000\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"train\.txt is not UTF-8 text; save it as UTF-8"):
        build_dataset(voc_cfg(root), "train")


def repeat_first_id(root: Path, split: str = "train") -> Path:
    """List the first id of ``split`` again on line 4 (after a blank line 3); returns the list."""
    path = split_list(root, split)
    ids = path.read_text().split()
    path.write_text(f"{ids[0]}\n{ids[1]}\n\n{ids[0]}\n")
    return path


def test_a_repeated_id_stops_building_the_dataset(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "val": 2})
    path = repeat_first_id(root, "val")
    with pytest.raises(DataError) as error:
        build_dataset(voc_cfg(root), "val")  # what training and evaluation build
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and "2007_val_000 on lines 1, 4" in message


def test_verify_reports_a_repeated_id_as_one_readable_line(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "val": 1})
    path = repeat_first_id(root)
    result = run_cli("data", "verify", "voc", "--root", str(root))
    assert result.returncode == 1, result.stderr
    problems = [line for line in result.stdout.splitlines() if "2007_train_000" in line]
    assert problems == [
        f"  split file {path} lists 2007_train_000 on lines 1, 4; keep one line per sample"
    ], result.stdout
    assert "(" not in problems[0] and "PosixPath" not in result.stdout


def test_a_camvid_image_listed_twice_is_refused(tmp_path: Path):
    root = tmp_path / "camvid"
    root.mkdir()
    line = "/SegNet/CamVid/train/a.png /SegNet/CamVid/trainannot/a.png"
    (root / "train.txt").write_text(f"{line}\n{line.replace('a.png', 'b.png')}\n{line}\n")
    with pytest.raises(DataError, match=r"train\.txt lists train/a\.png on lines 1, 3"):
        build_dataset({"name": "camvid", "root": str(root)}, "train")


# --- 16-bit greyscale labels --------------------------------------------------------------------


def test_a_16_bit_label_loads_like_the_same_label_saved_as_l(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "val": 1})
    path = label_file(root, "2007_train_000")
    values = np.asarray(Image.open(path))
    Image.fromarray(values.astype(np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    sixteen_bit = build_dataset(voc_cfg(root), "train").load_label(0)
    Image.fromarray(values, mode="L").save(path)
    greyscale = build_dataset(voc_cfg(root), "train").load_label(0)
    assert sixteen_bit.dtype == greyscale.dtype == np.uint8
    np.testing.assert_array_equal(sixteen_bit, greyscale)
    assert 255 in sixteen_bit  # the ignore band survives


def test_a_mode_i_label_is_class_indices(tmp_path: Path):
    values = np.array([[0, 1, 255], [20, 3, 4]], np.int32)
    path = tmp_path / "label.tif"
    Image.fromarray(values).save(path)  # PNG cannot hold mode I; TIFF can
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(read_label(path), values)


def test_a_16_bit_label_value_outside_the_classes_is_refused(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "val": 1})
    path = label_file(root, "2007_train_001")
    values = np.asarray(Image.open(path)).astype(np.uint16)
    values[0, 5] = 300
    Image.fromarray(values).save(path)
    result = run_cli("data", "verify", "voc", "--root", str(root))
    assert result.returncode == 1, result.stderr
    assert f"label {path} holds values 300 outside the 21 classes" in result.stdout


def test_a_16_bit_camvid_label_is_mapped_and_range_checked(tmp_path: Path):
    root = tmp_path / "camvid"
    for folder in ("train", "trainannot"):
        (root / folder).mkdir(parents=True)
    Image.new("RGB", (3, 2)).save(root / "train" / "a.png")
    label = np.array([[0, 11, 10], [1, 2, 3]], np.uint16)  # 11 is void
    Image.fromarray(label).save(root / "trainannot" / "a.png")
    (root / "train.txt").write_text("/x/train/a.png /x/trainannot/a.png\n")
    dataset = build_dataset({"name": "camvid", "root": str(root)}, "train")
    assert dataset.load_label(0).tolist() == [[0, 255, 10], [1, 2, 3]]
    label[1, 2] = 300
    Image.fromarray(label).save(root / "trainannot" / "a.png")
    with pytest.raises(DataError, match="holds values 300 outside the 11 classes"):
        dataset.load_label(0)


def test_a_colour_label_is_still_refused(tmp_path: Path):
    path = tmp_path / "colour.png"
    Image.new("RGB", (4, 4), (128, 0, 0)).save(path)
    with pytest.raises(DataError, match="mode-RGB image; labels must be palette"):
        read_label(path)


def test_error_of_the_data_command_stays_one_line(tmp_path: Path):
    root = write_voc_tree(tmp_path / ODD_NAME, {"train": 2, "val": 1})
    repeat_first_id(root)
    result = run_cli("data", "show", "voc", "--root", str(root), "--out", str(tmp_path / "g.png"))
    assert_one_line_error(result, "lists 2007_train_000 on lines 1, 4")

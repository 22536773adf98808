from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, write_palette_png, write_voc_tree
from PIL import Image

from parsenet.data import build_dataset, dataset_info
from parsenet.data.camvid import camvid_dataset
from parsenet.data.info import voc_palette
from parsenet.data.normalization import get_normalization
from parsenet.data.transforms import eval_transform, train_transform
from parsenet.data.voc import VOC_INFO, voc_dataset
from parsenet.errors import ConfigError, DataError

TORCHVISION = get_normalization("torchvision")


def test_voc_palette_is_the_devkit_colour_map():
    palette = voc_palette()
    assert palette[0] == (0, 0, 0) and palette[1] == (128, 0, 0) and palette[15] == (192, 128, 128)
    assert palette[255] == (224, 224, 192)


def test_voc_reader_reads_palette_indices(voc_root: Path):
    dataset = voc_dataset(voc_root, "train")
    assert len(dataset) == 4 and dataset.info.num_classes == 21
    image, label = dataset.load_pair(0)
    expected = np.asarray(Image.open(dataset.pairs[0][1]))
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(label, expected)  # indices, not colours
    assert set(np.unique(label)) <= set(range(21)) | {255}
    sample = voc_dataset(voc_root, "val", transform=eval_transform(TORCHVISION))[1]
    assert sample["image"].shape == (3, 30, 40) and sample["label"].dtype == torch.int64


def test_train_transform_crops_and_pads_with_ignore(voc_root: Path):
    transform = train_transform(TORCHVISION, crop_size=64, scale_range=(0.5, 1.0))
    dataset = voc_dataset(voc_root, "train", transform=transform)
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["image"].shape == (3, 64, 64) and sample["label"].shape == (64, 64)
        assert (sample["label"] == 255).sum() > 64 * 64 - 40 * 30  # the padding is ignored
        # the corner is always padding here: label 255, image the mean (normalised to ~0)
        assert sample["label"][0, 0] == 255
        assert sample["image"][:, 0, 0].abs().max() < 0.02
        assert set(sample["label"].unique().tolist()) <= set(range(21)) | {255}


def test_caffe_normalization_is_bgr_minus_mean():
    caffe = get_normalization("caffe")
    pixel = np.array([[[10, 20, 30]]], dtype=np.uint8)
    out = caffe(pixel)
    torch.testing.assert_close(
        out.flatten(), torch.tensor([30 - 104.00699, 20 - 116.66877, 10 - 122.67892])
    )
    fill = np.array([[caffe.fill_rgb()]], dtype=np.float32)
    assert np.allclose(fill[0, 0][::-1], caffe.mean)


def test_missing_root_says_how_to_get_the_data(tmp_path: Path):
    with pytest.raises(DataError, match="data.root=.*no VOCdevkit/VOC2012 .*holds VOCdevkit"):
        voc_dataset(tmp_path / "nowhere", "train")


def test_missing_split_file(voc_root: Path):
    with pytest.raises(DataError, match="split file .*test.txt does not exist"):
        voc_dataset(voc_root, "test")


def test_image_without_label(voc_root: Path):
    label = voc_root / "VOCdevkit/VOC2012/SegmentationClass/2007_train_002.png"
    label.unlink()
    with pytest.raises(DataError, match="label file .*2007_train_002.png does not exist"):
        voc_dataset(voc_root, "train")


def test_size_mismatch_names_both_files(voc_root: Path):
    write_palette_png(
        np.zeros((10, 10)), voc_root / "VOCdevkit/VOC2012/SegmentationClass/2007_train_001.png"
    )
    dataset = voc_dataset(voc_root, "train")
    with pytest.raises(DataError, match=r"2007_train_001.jpg is 40×30 but its label .* is 10×10"):
        dataset[1]


def test_colour_label_is_rejected(voc_root: Path):
    path = voc_root / "VOCdevkit/VOC2012/SegmentationClass/2007_train_000.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(DataError, match="mode-RGB image; labels must be palette"):
        voc_dataset(voc_root, "train")[0]


def test_label_values_outside_the_classes(voc_root: Path):
    write_palette_png(
        np.full((30, 40), 33), voc_root / "VOCdevkit/VOC2012/SegmentationClass/2007_val_000.png"
    )
    with pytest.raises(DataError, match="holds values 33 outside the 21 classes"):
        voc_dataset(voc_root, "val")[0]


def test_camvid_reader_maps_release_paths_and_void(tmp_path: Path):
    root = tmp_path / "camvid"
    for folder in ("train", "trainannot"):
        (root / folder).mkdir(parents=True)
    label = np.arange(12, dtype=np.uint8).repeat(2).reshape(4, 6)
    Image.fromarray(label, mode="L").save(root / "trainannot" / "a.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / "train" / "a.png")
    (root / "train.txt").write_text("/SegNet/CamVid/train/a.png /SegNet/CamVid/trainannot/a.png\n")
    dataset = camvid_dataset(root, "train")
    assert dataset.pairs[0] == (root / "train" / "a.png", root / "trainannot" / "a.png")
    _, loaded = dataset.load_pair(0)
    expected = label.copy()
    expected[expected == 11] = 255
    np.testing.assert_array_equal(loaded, expected)


def test_build_dataset_by_name(voc_root: Path):
    dataset = build_dataset({"name": "voc", "root": str(voc_root)}, "val")
    assert len(dataset) == 3 and dataset.info is VOC_INFO
    with pytest.raises(ConfigError, match="data.name='coco'"):
        build_dataset({"name": "coco", "root": str(voc_root)}, "val")


def test_tree_with_other_size_and_classes(tmp_path: Path):
    root = write_voc_tree(tmp_path / "t", {"train": 2}, size=(17, 23), num_classes=3)
    image, label = voc_dataset(root, "train").load_pair(1)
    assert image.shape == (23, 17, 3) and label.max() == 255


def write_folder_tree(root: Path, split_sizes: dict[str, int], num_classes: int) -> Path:
    """A dataset in the folder layout: images/*.jpg, masks/*.png (index PNGs), <split>.txt."""
    rng = np.random.default_rng(0)
    for split, count in split_sizes.items():
        ids = [f"{split}_{index:02d}" for index in range(count)]
        for sample_id in ids:
            image = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "images" / f"{sample_id}.jpg")
            label = rng.integers(0, num_classes, size=(12, 16))
            label[0] = 255
            write_palette_png(label, root / "masks" / f"{sample_id}.png")
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.mark.parametrize(
    "name, split, num_classes", [("siftflow", "test", 33), ("context59", "val", 59)]
)
def test_folder_layout_datasets_through_their_configs(tmp_path: Path, name, split, num_classes):
    from omegaconf import OmegaConf

    root = write_folder_tree(tmp_path / name, {"train": 3, split: 2}, num_classes)
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "data" / f"{name}.yaml"))
    cfg["root"] = str(root)
    assert cfg["val_split"] == split
    dataset = build_dataset(cfg, split)
    assert len(dataset) == 2 and dataset.info.num_classes == num_classes
    image, label = dataset.load_pair(1)
    assert image.shape == (12, 16, 3) and label.max() == 255 and label[1:].max() < num_classes
    with pytest.raises(DataError, match="expected images/ and masks/"):
        build_dataset({**cfg, "root": str(tmp_path / "nowhere")}, split)


def test_context60_adds_background_as_class_zero():
    context60, context59 = dataset_info({"name": "context60"}), dataset_info({"name": "context59"})
    assert context60.class_names[0] == "background"
    assert context60.class_names[1:] == context59.class_names


def test_an_unknown_name_and_a_folder_without_classes_are_config_errors():
    known = "voc, camvid, synthetic, siftflow, context59, context60, folder"
    for lookup in (dataset_info, lambda cfg: build_dataset(cfg, "train")):
        with pytest.raises(ConfigError, match=f"data.name='cityscapes' is not one of {known}$"):
            lookup({"name": "cityscapes"})
    with pytest.raises(ConfigError, match="data=folder needs data.classes=PATH"):
        dataset_info({"name": "folder"})

import json
from pathlib import Path

import numpy as np
import pytest

from parsenet.data.synthetic import SCENES, SYNTHETIC_INFO, ensure_synthetic, render_sample
from parsenet.data.voc import voc_dataset
from parsenet.errors import DataError

SMALL = {"height": 16, "width": 40}


def test_written_in_voc_layout_and_deterministic(tmp_path: Path):
    first = ensure_synthetic(tmp_path / "a", num_train=5, num_val=3, height=24, width=64, seed=7)
    second = ensure_synthetic(tmp_path / "b", num_train=5, num_val=3, height=24, width=64, seed=7)
    base = first / "VOCdevkit" / "VOC2012"
    assert (base / "ImageSets/Segmentation/train.txt").read_text().split() == [
        f"train_{i:05d}" for i in range(5)
    ]
    for split, count in (("train", 5), ("val", 3)):
        a = voc_dataset(first, split, info=SYNTHETIC_INFO)
        b = voc_dataset(second, split, info=SYNTHETIC_INFO)
        assert len(a) == count
        for index in range(count):
            image_a, label_a = a.load_pair(index)
            image_b, label_b = b.load_pair(index)
            np.testing.assert_array_equal(label_a, label_b)
            np.testing.assert_array_equal(image_a, image_b)
            assert image_a.shape == (24, 64, 3) and label_a.max() < 5


def test_regenerated_when_settings_change_and_kept_otherwise(tmp_path: Path):
    root = ensure_synthetic(tmp_path / "s", num_train=2, num_val=2, **SMALL)
    marker = root / "synthetic.json"
    stamp = marker.stat().st_mtime_ns
    ensure_synthetic(root, num_train=2, num_val=2, **SMALL)
    assert marker.stat().st_mtime_ns == stamp
    ensure_synthetic(root, num_train=3, num_val=2, **SMALL)
    assert json.loads(marker.read_text())["num_train"] == 3
    assert len(list((root / "VOCdevkit/VOC2012/JPEGImages").iterdir())) == 5
    assert not list(tmp_path.glob(".s.tmp-*"))


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not written by the synthetic generator"):
        ensure_synthetic(tmp_path / "mine", num_train=1, num_val=1, **SMALL)
    assert (tmp_path / "mine" / "keep.txt").exists()


def test_class_is_decided_by_the_distant_scene_cue():
    rng = np.random.default_rng(0)
    far_objects = 0
    for _ in range(30):
        image, label = render_sample(rng, 64, 512)
        band = image[:, :16].reshape(-1, 3).mean(axis=0)
        scene = int(np.argmin([np.abs(band - np.array(rgb)).sum() for rgb, _, _ in SCENES]))
        _, hull, disc = SCENES[scene]
        assert set(np.unique(label)) <= {0, hull, disc} and len(np.unique(label)) > 1
        assert (label[:, :32] == 0).all()  # the cue band is background
        far_objects += bool((label[:, 300:] > 0).any())
    assert far_objects > 10  # many objects lie beyond the FCN's reach of the cue

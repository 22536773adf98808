"""Real data read in place: PASCAL VOC 2012 sample (PARSENET_VOC) and CamVid (PARSENET_CAMVID)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODEL, run_cli
from PIL import Image

from parsenet.data.camvid import camvid_dataset
from parsenet.data.voc import voc_dataset


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (.ci/run sets it to ../shared/datasets/…)")
    return Path(value)


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_voc_pair_loads_with_valid_labels(split):
    dataset = voc_dataset(_env_path("PARSENET_VOC"), split)
    assert len(dataset) > 100
    seen = set()
    for index in range(len(dataset)):
        image, label = dataset.load_pair(index)  # checks sizes and value range
        assert image.shape[:2] == label.shape and max(label.shape) <= 500
        seen |= set(np.unique(label).tolist())
    assert seen <= set(range(21)) | {255}
    assert 0 in seen and 255 in seen and len(seen) > 5


# slow: 75 s; the VOC sample is still verified and loaded by the default suite
@pytest.mark.slow
def test_voc_train_and_eval_through_the_cli(tmp_path: Path):
    root = _env_path("PARSENET_VOC")
    run_dir = tmp_path / "run"
    run_cli(
        "parsenet-train",
        "data=voc",
        f"data.root={root}",
        *TINY_MODEL,
        "train.max_iters=2",
        "train.batch_size=2",
        "data.augment.crop_size=96",
        "data.num_workers=1",
        "data.val_split=val",
        "train.num_overlays=1",
        f"hydra.run.dir={run_dir}",
        check=True,
        timeout=900,
    )
    eval_dir = tmp_path / "eval"
    result = run_cli(
        "parsenet-eval",
        f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
        f"hydra.run.dir={eval_dir}",
        check=True,
        timeout=900,
    )
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "voc" and metrics["num_images"] == 149
    assert len(metrics["per_class_iou"]) == 21 and 0.0 <= metrics["mIoU"] <= 1.0
    assert "tvmonitor" in result.stdout


@pytest.mark.parametrize("split", ["train", "val"])
def test_camvid_lists_resolve_and_void_is_ignored(split):
    root = _env_path("PARSENET_CAMVID")
    dataset = camvid_dataset(root, split)
    assert len(dataset) == {"train": 367, "val": 101}[split]
    raw_values, loaded_values = set(), set()
    for index in range(len(dataset)):
        _, label = dataset.load_pair(index)
        raw = np.asarray(Image.open(dataset.pairs[index][1]))
        raw_values |= set(np.unique(raw).tolist())
        loaded_values |= set(np.unique(label).tolist())
        np.testing.assert_array_equal(label == 255, raw == 11)
    assert raw_values <= set(range(12)) and 11 in raw_values
    assert 11 not in loaded_values and 255 in loaded_values

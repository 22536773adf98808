"""Shared fixtures: small VOC-layout trees written in the exact on-disk format, CLI runner."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parsenet.data.info import voc_palette

REPO = Path(__file__).resolve().parents[1]
# The memory-layout probe's cache (parsenet.engine.runtime.memory_format): one for the whole
# test session, in every process the tests start, never the user's ~/.cache.
if "PARSENET_CACHE" not in os.environ:
    os.environ["PARSENET_CACHE"] = tempfile.mkdtemp(prefix="parsenet-test-cache-")
    atexit.register(shutil.rmtree, os.environ["PARSENET_CACHE"], True)
TINY_MODEL = ["model.backbone.width_mult=0.0625"]
TINY_SYNTHETIC = [
    "data.num_train=16",
    "data.num_val=6",
    "data.height=24",
    "data.width=64",
    "data.num_workers=0",
]


def write_palette_png(label: np.ndarray, path: Path) -> None:
    """Save class indices as a palette (mode P) PNG, as the VOC devkit does."""
    png = Image.fromarray(label.astype(np.uint8), mode="P")
    png.putpalette([value for colour in voc_palette(256) for value in colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    png.save(path)


def write_voc_tree(
    root: Path, splits: dict[str, int], size=(40, 30), num_classes=21, seed=0
) -> Path:
    """A VOCdevkit/VOC2012 tree with random JPEGs and palette labels (with a 255 band)."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
    width, height = size
    for split, count in splits.items():
        ids = [f"2007_{split}_{index:03d}" for index in range(count)]
        for sample_id in ids:
            image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(image).save(base / "JPEGImages" / f"{sample_id}.jpg")
            label = rng.integers(0, num_classes, size=(height, width))
            label[:, :2] = 255
            write_palette_png(label, base / "SegmentationClass" / f"{sample_id}.png")
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A tiny VOC tree: 4 train and 3 val images of 40×30."""
    return write_voc_tree(tmp_path / "voc", {"train": 4, "val": 3})


def run_cli(
    command: str,
    *overrides: str,
    cwd: Path | None = None,
    check: bool = False,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run a console script (as ``python -m parsenet.cli.<module>``) and capture its output."""
    modules = {
        "train": "train",
        "eval": "evaluate",
        "predict": "predict",
        "export": "export",
        "convert": "convert",
        "data": "data",
    }
    module = modules[command.removeprefix("parsenet-")]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", f"parsenet.cli.{module}", *overrides],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The command failed with exit status 2 and one ``error:`` line (no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def compose_train(tmp_path: Path, *overrides: str) -> dict:
    """The resolved ``train.yaml`` for a tiny, fast run on the synthetic data (plain dicts)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY_MODEL,
                *TINY_SYNTHETIC,
                "optim=adamw",
                f"paths.data_root={tmp_path / 'data'}",
                "train.batch_size=2",
                "train.max_iters=3",
                "train.num_overlays=0",
                *overrides,
            ],
        )
    return OmegaConf.to_container(cfg, resolve=True)

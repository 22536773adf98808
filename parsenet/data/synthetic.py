"""A small synthetic dataset, written in the PASCAL VOC layout, where context decides the class.

Every image is a wide strip. A band over its left quarter tells the scene by its colour
(harbour: blue water, street: brown road); the rest is a neutral textured ground, the same in
both scenes, with a few objects on it. An object's shape tells only half of its class: a long
hull is a *boat* in a harbour and a *car* in a street; a disc is a *buoy* or a *sign*. On the
default 64×512 strips objects lie up to about 360 px from the band, while the receptive field of
the VGG16 FCN's fc7 reaches about 200 px to each side (412 px in all), so labelling the far ones
needs the image-wide view that ParseNet's global context gives.

The data is deterministic in its parameters (seed, counts, size) and regenerated when they change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from parsenet.data.info import VOC_COLOURS, DatasetInfo, voc_palette
from parsenet.data.voc import VOC_SUBDIR
from parsenet.errors import DataError
from parsenet.fileio import staged_folder
from parsenet.visualize import save_label_png

SYNTHETIC_CLASSES = ("background", "boat", "car", "buoy", "sign")
SYNTHETIC_INFO = DatasetInfo("synthetic", SYNTHETIC_CLASSES, voc_palette(len(SYNTHETIC_CLASSES)))
MARKER = "synthetic.json"
GENERATOR_VERSION = 2

# scene → (RGB mean of the scene band, class of a hull, class of a disc)
SCENES = (
    ((60, 110, 200), 1, 3),  # harbour: water; boat, buoy
    ((160, 120, 80), 2, 4),  # street: road; car, sign
)


def _textured(rng: np.random.Generator, height: int, width: int, rgb, spread: float) -> np.ndarray:
    """A patch of colour ``rgb`` with per-pixel noise."""
    noise = rng.normal(0.0, spread, size=(height, width, 3))
    return np.asarray(rgb, dtype=np.float64) + noise


def render_sample(
    rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image (H×W×3 uint8) and its label (H×W uint8 class indices)."""
    scene_rgb, hull_class, disc_class = SCENES[rng.integers(len(SCENES))]
    ground = rng.uniform(90, 160)
    image = _textured(rng, height, width, (ground, ground, ground), 18.0)
    label = np.zeros((height, width), dtype=np.uint8)
    band = max(4, width // 4)
    image[:, :band] = _textured(rng, height, band, scene_rgb, 15.0)
    rows, cols = np.mgrid[0:height, 0:width]
    for _ in range(rng.integers(1, 4)):
        colour = rng.uniform(20, 235, size=3)
        center_row = rng.uniform(height * 0.25, height * 0.75)
        center_col = rng.uniform(band + height * 0.5, width - height * 0.3)
        if rng.random() < 0.5:
            half_width = rng.uniform(0.2, 0.4) * height
            half_height = half_width * rng.uniform(0.35, 0.5)
            mask = (np.abs(rows - center_row) <= half_height) & (
                np.abs(cols - center_col) <= half_width
            )
            label[mask] = hull_class
        else:
            radius = rng.uniform(0.12, 0.24) * height
            mask = (rows - center_row) ** 2 + (cols - center_col) ** 2 <= radius**2
            label[mask] = disc_class
        image[mask] = colour + rng.normal(0.0, 10.0, size=(int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_synthetic(
    root: Path, num_train: int, num_val: int, height: int, width: int, seed: int
) -> None:
    """Write the dataset to ``root`` in the VOC layout (``root`` must not exist yet)."""
    base = root / VOC_SUBDIR
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True)
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        rng = np.random.default_rng([seed, split_index])
        ids = [f"{split}_{index:05d}" for index in range(count)]
        for sample_id in ids:
            image, label = render_sample(rng, height, width)
            Image.fromarray(image).save(base / "JPEGImages" / f"{sample_id}.jpg", quality=95)
            save_label_png(label, VOC_COLOURS, base / "SegmentationClass" / f"{sample_id}.png")
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def ensure_synthetic(
    root: str | Path,
    num_train: int = 600,
    num_val: int = 100,
    height: int = 64,
    width: int = 512,
    seed: int = 0,
) -> Path:
    """Generate the synthetic dataset at ``root`` unless it is already there with these settings.

    The tree is written to a temporary folder beside ``root`` and renamed into place, so an
    interrupted run never leaves a half-written dataset. Returns ``root``.
    """
    root = Path(root)
    params = {
        "version": GENERATOR_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "height": height,
        "width": width,
        "seed": seed,
    }
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    if root.exists() and not marker.is_file():
        raise DataError(
            f"data.root={root} exists but was not written by the synthetic generator; "
            "choose another data.root for data=synthetic"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():
        shutil.rmtree(root)
    try:
        with staged_folder(root) as staging:
            write_synthetic(staging, num_train, num_val, height, width, seed)
            (staging / MARKER).write_text(json.dumps(params, indent=2) + "\n")
    except OSError:
        # Another process finished the same dataset first; keep theirs if it matches.
        if not (marker.is_file() and json.loads(marker.read_text()) == params):
            raise
    return root

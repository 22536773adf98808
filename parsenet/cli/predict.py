"""``parsenet-predict checkpoint=PATH inputs=FILE|DIR|GLOB``: segment any images.

For every readable input: ``labels/<name>.png`` (class indices in a palette PNG),
``overlays/<name>.png`` and ``side_by_side/<name>.png`` in the run folder. Unreadable files are
reported and skipped; the run goes on.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from parsenet.cli.common import hydra_command
from parsenet.data.base import read_image
from parsenet.data.normalization import get_normalization
from parsenet.engine.checkpoint import load_checkpoint, restore_model
from parsenet.engine.inference import InferenceMode
from parsenet.engine.runtime import resolve_device
from parsenet.errors import DataError
from parsenet.visualize import colorize, overlay, save_label_png, save_png

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def find_inputs(inputs: str) -> list[Path]:
    """The files ``inputs`` names: one file, the images in a folder, or a glob's matches."""
    path = Path(inputs).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not found:
        raise DataError(f"inputs={inputs}: no image files there (a file, a folder or a glob)")
    return found


def same_size_batches(
    paths: list[Path], batch_size: int, skipped: list[str]
) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Decoded images in batches of one size (never resized or padded, which would change
    the global context); unreadable files go to ``skipped`` with the reason."""
    batch: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        try:
            image = read_image(path)
        except DataError as error:
            log.warning("skipping %s", error)
            skipped.append(str(path))
            continue
        if batch and (image.shape != batch[0][1].shape or len(batch) == batch_size):
            yield batch
            batch = []
        batch.append((path, image))
    if batch:
        yield batch


@hydra_command("predict")
def main(cfg: dict[str, Any], run_dir: Path) -> None:
    """Predict every input image and write its label PNG, overlay and side-by-side picture."""
    path = Path(cfg["checkpoint"])
    checkpoint = load_checkpoint(path)
    device = resolve_device(cfg["device"])
    mode = InferenceMode.from_config(cfg)
    model = restore_model(checkpoint, path).to(device).eval()
    normalization = get_normalization(checkpoint["config"]["model"]["input_norm"])
    palette = checkpoint["dataset"]["palette"]
    inputs = find_inputs(str(cfg["inputs"]))
    skipped: list[str] = []
    written = 0
    with tqdm(total=len(inputs), desc="predict", disable=None) as progress:
        for batch in same_size_batches(inputs, cfg["batch_size"], skipped):
            images = torch.stack([normalization(image) for _, image in batch]).to(device)
            with torch.no_grad():
                predictions = mode.scores(model, images).argmax(dim=1).cpu().numpy()
            for (source, image), prediction in zip(batch, predictions, strict=True):
                blended = overlay(image, colorize(prediction, palette), cfg["alpha"])
                gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
                save_label_png(prediction, palette, run_dir / "labels" / f"{source.stem}.png")
                save_png(blended, run_dir / "overlays" / f"{source.stem}.png")
                side = np.concatenate([image, gap, blended], axis=1)
                save_png(side, run_dir / "side_by_side" / f"{source.stem}.png")
                written += 1
            progress.update(written + len(skipped) - progress.n)
    if written == 0:
        raise DataError(f"inputs={cfg['inputs']}: none of the {len(inputs)} files could be read")
    print(f"predicted {written} image(s) into {run_dir} (labels/, overlays/, side_by_side/)")
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s): {', '.join(skipped)}")


if __name__ == "__main__":
    main()

"""``parsenet-predict`` as a user runs it: wall time, per-image latency and start-up."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from parsenet.data import dataset_info
from parsenet.engine.checkpoint import save_checkpoint
from parsenet.models import build_model

from .data import voc_pairs
from .settings import REPO, train_config
from .timing import figure


def write_checkpoint(cfg: dict[str, Any], path: Path) -> Path:
    """A checkpoint of a randomly initialised model that ``parsenet-predict`` can load."""
    info = dataset_info(cfg["data"])
    model = build_model(cfg["model"], info.num_classes)
    state = {"model": model.state_dict(), "config": cfg, "dataset": info.to_dict()}
    return save_checkpoint(path, {**state, "iteration": 0})


def link_inputs(paths: list[Path], folder: Path) -> Path:
    """A folder of symbolic links to ``paths`` (the images are read in place)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return folder


def run_predict(checkpoint: Path, inputs: Path, run_dir: Path, device: str) -> float:
    """Wall time of one ``parsenet-predict`` command (start-up, model load, images, files), one
    image per batch."""
    command = [
        sys.executable,
        "-m",
        "parsenet.cli.predict",
        f"checkpoint={checkpoint}",
        f"inputs={inputs}",
        f"device={device}",
        "batch_size=1",
        f"hydra.run.dir={run_dir}",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - started


def seconds_per_image(run_dir: Path) -> float:
    """The steady per-image latency of a predict run: the spacing of its label files' times."""
    times = sorted(path.stat().st_mtime for path in (run_dir / "labels").glob("*.png"))
    return (times[-1] - times[0]) / (len(times) - 1)


def measure_predict(args: argparse.Namespace) -> dict[str, Any]:
    """``parsenet-predict`` on ``--predict-images`` VOC images: the command's wall time, the
    per-image latency once running, and the start-up (wall time less the images)."""
    folder = args.out / "predict"
    checkpoint = write_checkpoint(train_config(args), folder / "model.pt")
    images = [image for image, _ in voc_pairs(args.voc, "val", args.predict_images)]
    inputs = link_inputs(images, folder / "inputs")
    wall, per_image = [], []
    for repetition in range(args.repetitions):
        run_dir = folder / "runs" / str(repetition)
        wall.append(run_predict(checkpoint, inputs, run_dir, args.device))
        per_image.append(seconds_per_image(run_dir))
    count = len(images)
    return {
        f"command, {count} images": figure(wall, "s"),
        "per image": figure(per_image, "s"),
        "start-up": figure([w - count * p for w, p in zip(wall, per_image, strict=True)], "s"),
    }

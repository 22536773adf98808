"""``parsenet-predict`` as a user runs it: wall time, per-image latency and start-up, for each
backend of ``--backends`` (torch in the layout ``channels_last=auto`` picks, ONNX Runtime).

The commands use a cache folder of their own (``OUT/predict/cache``: the layout verdict, the
ONNX export of the benchmark's checkpoint), filled by one untimed command per backend first, so
the timed commands are what a user sees from the second command on."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from parsenet.data import dataset_info
from parsenet.engine.runtime.checkpoint import save_checkpoint
from parsenet.engine.runtime.memory_format import cache_path
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


def run_predict(
    checkpoint: Path,
    inputs: Path,
    run_dir: Path,
    args: argparse.Namespace,
    backend: str,
    *overrides: str,
) -> float:
    """Wall time of one ``parsenet-predict`` command (start-up, model load, images, files), one
    image per batch, with ``OUT/predict/cache`` as its cache folder and further ``overrides``
    (``precision=int8``)."""
    command = [
        sys.executable,
        "-m",
        "parsenet.cli.predict",
        f"checkpoint={checkpoint}",
        f"inputs={inputs}",
        f"device={args.device}",
        "batch_size=1",
        f"backend={backend}",
        f"hydra.run.dir={run_dir}",
        f"channels_last={str(args.channels_last).lower()}",
        *overrides,
    ]
    environment = {**os.environ, "PARSENET_CACHE": str(args.out / "predict" / "cache")}
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO, env=environment)
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
    backends = [b for b in args.backends if b == "torch" or not args.device.startswith("cuda")]
    wall: dict[str, list[float]] = {backend: [] for backend in backends}
    per_image: dict[str, list[float]] = {backend: [] for backend in backends}
    cache = args.out / "predict" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    if cache_path().is_file():  # the layout verdicts this machine has (the same auto choice)
        shutil.copyfile(cache_path(), cache / cache_path().name)
    for backend in backends:  # fills the cache: layout verdict, ONNX export
        run_predict(checkpoint, inputs, folder / "runs" / f"first_{backend}", args, backend)
    for repetition in range(args.repetitions):
        for backend in backends:  # taking turns
            run_dir = folder / "runs" / f"{backend}_{repetition}"
            wall[backend].append(run_predict(checkpoint, inputs, run_dir, args, backend))
            per_image[backend].append(seconds_per_image(run_dir))
    count = len(images)
    results = {}
    for backend in backends:
        prefix = "" if backend == "torch" else f"{backend}: "
        starts = [w - count * p for w, p in zip(wall[backend], per_image[backend], strict=True)]
        results[f"{prefix}command, {count} images"] = figure(wall[backend], "s")
        results[f"{prefix}per image"] = figure(per_image[backend], "s")
        results[f"{prefix}start-up"] = figure(starts, "s")
    return results

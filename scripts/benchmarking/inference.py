"""Whole-image inference in a fresh process: images/s and peak memory."""

from __future__ import annotations

import argparse
import multiprocessing
from pathlib import Path
from typing import Any

import torch

from parsenet.data import dataset_info
from parsenet.engine.inference import InferenceMode
from parsenet.engine.runtime import peak_memory_mb
from parsenet.models import build_model

from .settings import Setup, train_config
from .timing import figure, rates, round_robin

INFERENCE_SIZE = (375, 500)  # H×W of a typical VOC image


def program_peak_resident_mb() -> float:
    """This program's own peak resident memory: ``VmHWM`` on Linux, else
    :func:`~parsenet.engine.runtime.peak_memory_mb` (``ru_maxrss``).

    Not ``ru_maxrss`` where ``VmHWM`` exists: ``ru_maxrss`` survives ``exec``, so a process
    that multiprocessing spawns (``vfork`` + ``exec``) starts with its parent's peak (a parent
    that had peaked at 812 MiB gave its spawned child ``ru_maxrss`` 812 MiB, ``VmHWM`` 15 MiB);
    after the training parts that would be the parent's full-width training, not inference.
    ``VmHWM`` belongs to the program's own address space and starts afresh with it.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_memory_mb(torch.device("cpu"))


def inference_worker(
    model_cfg: dict[str, Any], num_classes: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Whole-image evaluation steps (scores and argmax) at 500×375 in this (fresh) process:
    seconds per image and peak memory (GPU: allocated; CPU: resident, also before the model
    ran)."""
    setup = Setup(args)
    model = setup.prepare(build_model(model_cfg, num_classes)).eval()
    images = setup.images(1, *INFERENCE_SIZE)
    whole = InferenceMode("whole")
    before_mb = program_peak_resident_mb()
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setup.device)

    @torch.no_grad()
    def step() -> None:
        with setup.precision.autocast():
            whole.scores(model, images).argmax(dim=1)

    seconds = round_robin({"inference": step}, setup.device, args.warmup, args.repetitions)
    if setup.device.type == "cuda":
        peak_mb = peak_memory_mb(setup.device)
    else:
        peak_mb = program_peak_resident_mb()
    return {"seconds": seconds["inference"], "peak_mb": peak_mb, "before_mb": before_mb}


def measure_inference(args: argparse.Namespace) -> dict[str, Any]:
    """Images/s and peak memory of whole-image inference, measured in a fresh process so the
    peak is inference's own."""
    cfg = train_config(args)
    num_classes = dataset_info(cfg["data"]).num_classes
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        measured = pool.apply(inference_worker, (cfg["model"], num_classes, args))
    memory = "GPU allocated" if args.device.startswith("cuda") else "process resident"
    height, width = INFERENCE_SIZE
    return {
        f"whole {width}×{height}": figure(rates(1, measured["seconds"]), "images/s"),
        "peak memory": {
            "median": measured["peak_mb"],
            "unit": f"MiB ({memory})",
            "peak_before_first_image_mb": measured["before_mb"],
        },
    }

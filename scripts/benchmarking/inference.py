"""Whole-image inference in a fresh process: images/s and peak memory, in the layout users get
(``--channels-last``; ``auto`` by default), with ``--compare-layouts`` in both forced layouts too,
and through ONNX Runtime (``--backends``), all taking turns."""

from __future__ import annotations

import argparse
import copy
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from parsenet.data import dataset_info
from parsenet.engine.runtime.process import peak_memory_mb
from parsenet.engine.scoring.inference import InferenceMode
from parsenet.export import export_model
from parsenet.models import build_model
from parsenet.onnx_backend import OnnxRuntimeModel

from .peak import peak_meter
from .profiling import profile_steps
from .settings import Setup, layout_note, train_config
from .timing import Step, figure, rates, round_robin

INFERENCE_SIZE = (375, 500)  # H×W of a typical VOC image
T = TypeVar("T")


def program_peak_resident_mb() -> float:
    """This program's own peak resident memory: ``VmHWM`` on Linux, else
    :func:`~parsenet.engine.runtime.process.peak_memory_mb` (``ru_maxrss``).

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


def whole_image_step(model: torch.nn.Module, images: torch.Tensor, setup: Setup) -> Step:
    """Whole-image scores and argmax of ``images`` in inference mode, as ``parsenet-predict``."""
    whole = InferenceMode("whole")

    @torch.inference_mode()
    def step() -> None:
        with setup.precision.autocast():
            whole.scores(model, images).argmax(dim=1)

    return step


def peak_after_warmup(step: Step, setup: Setup, warmup: int) -> float:
    """Run ``step``'s warm-up (``warmup`` calls, at least one) and return the peak memory in
    MiB: on a GPU allocated memory (its peak statistics reset just before), on a CPU this
    program's resident peak."""
    on_gpu = setup.device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(setup.device)
    for _ in range(max(warmup, 1)):
        step()
    return peak_memory_mb(setup.device) if on_gpu else program_peak_resident_mb()


def in_fresh_process(function: Callable[..., T], *arguments: Any) -> T:
    """``function(*arguments)`` run in a new (spawned) process, whose memory peak is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, arguments)


def inference_worker(
    model_cfg: dict[str, Any],
    num_classes: int,
    args: argparse.Namespace,
    peak: dict | None = None,
) -> dict[str, Any]:
    """Whole-image inference (scores and argmax) at 500×375 in this (fresh) process: seconds
    per image of each variant, taking turns, and the peak memory of the default one (GPU:
    allocated; CPU: resident, also before the model ran), read before the others are built.
    With ``--profile``, one more pass of the default under the profiler (``OUT/profiles/``,
    its layers against the GEMM peak when ``peak`` was measured)."""
    setup = Setup(args)
    model = build_model(model_cfg, num_classes).eval()
    shape = (1, 3, *INFERENCE_SIZE)
    layout = setup.layout(model.to(setup.device), shape, training=False)
    variants = [("torch", copy.deepcopy(model), layout)]
    for name, forced in (("NCHW", False), ("NHWC", True)) if args.compare_layouts else ():
        variants.append((name, copy.deepcopy(model), setup.layout(model, shape, False, forced)))
    steps, layouts = {}, {}
    before_mb = program_peak_resident_mb()
    for name, replica, choice in variants:
        images = setup.images(*shape[:1], *INFERENCE_SIZE, choice)
        steps[name] = whole_image_step(setup.prepare(replica, choice), images, setup)
        steps[name].model, steps[name].images = replica, images  # for profiling
        layouts[name] = layout_note(choice)
        if name == "torch":  # the default's own peak, before any other variant exists
            peak_mb = peak_after_warmup(steps[name], setup, args.warmup)
    if "onnxruntime" in args.backends and setup.device.type == "cpu":
        (args.out / "inference").mkdir(parents=True, exist_ok=True)
        exported = export_model(model.cpu(), "onnx", args.out / "inference" / "model.onnx")
        images = setup.images(*shape[:1], *INFERENCE_SIZE)  # NCHW, as ONNX Runtime takes it
        steps["onnxruntime"] = whole_image_step(OnnxRuntimeModel(exported), images, setup)
        layouts["onnxruntime"] = "ONNX Runtime's own"
    seconds = round_robin(steps, setup.device, args.warmup, args.repetitions)
    if args.profile:
        default = {f"inference {INFERENCE_SIZE[1]}x{INFERENCE_SIZE[0]}": steps["torch"]}
        profile_steps(default, setup, args.out / "profiles", peak_meter(args, setup, peak))
    return {"seconds": seconds, "layouts": layouts, "peak_mb": peak_mb, "before_mb": before_mb}


def measure_inference(args: argparse.Namespace, peak: dict | None = None) -> dict[str, Any]:
    """Images/s and peak memory of whole-image inference, measured in a fresh process so the
    peak is inference's own."""
    cfg = train_config(args)
    num_classes = dataset_info(cfg["data"]).num_classes
    setup = Setup(args)  # a probe of the layout, if one is due, here: the worker's memory is
    model = build_model(cfg["model"], num_classes).to(setup.device).eval()  # inference's own
    setup.layout(model, (1, 3, *INFERENCE_SIZE), training=False)
    del model
    measured = in_fresh_process(inference_worker, cfg["model"], num_classes, args, peak)
    memory = "GPU allocated" if args.device.startswith("cuda") else "process resident"
    height, width = INFERENCE_SIZE
    names = {"torch": "", "NCHW": " NCHW", "NHWC": " NHWC", "onnxruntime": " onnxruntime"}
    results = {
        f"whole {width}×{height}{names[name]}": figure(
            rates(1, seconds), "images/s", layout=measured["layouts"][name]
        )
        for name, seconds in measured["seconds"].items()
    }
    return {
        **results,
        "peak memory": {
            "median": measured["peak_mb"],
            "unit": f"MiB ({memory})",
            "peak_before_first_image_mb": measured["before_mb"],
        },
    }

"""The training loops: the model step on tensors in memory, the real trainer, a plain reference
loop, their interleaved measurement and an optional profile of each."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from parsenet.data import build_dataset, dataset_info
from parsenet.data.normalization import get_normalization
from parsenet.data.transforms import train_transform
from parsenet.engine.flops import TRAINING_FORWARDS, forward_flops
from parsenet.engine.optim import build_optimizer
from parsenet.engine.precision import Precision
from parsenet.engine.trainer import Trainer
from parsenet.models import build_model

from .peak import with_peak
from .settings import Setup, train_config
from .timing import Step, figure, rates, time_once


def plain_optimizer(model: nn.Module, optim_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """The configured optimizer (SGD: learning rate, momentum, weight decay) over all of the
    model's parameters as one group, without the trainer's per-layer multipliers."""
    return build_optimizer(optim_cfg, [{"params": list(model.parameters())}])


def plain_update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    images: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
) -> None:
    """Forward (under ``precision``), cross-entropy, backward and an optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        logits = model(images)
    F.cross_entropy(logits.float(), labels, ignore_index=ignore_index).backward()
    optimizer.step()


def model_step(cfg: dict[str, Any], setup: Setup, batch: int, size: int) -> tuple[Step, float]:
    """Forward + backward + SGD step on a fixed batch in memory, and its FLOPs (3 × forward)."""
    num_classes = dataset_info(cfg["data"]).num_classes
    model = build_model(cfg["model"], num_classes).to(setup.device)
    flops = TRAINING_FORWARDS * forward_flops(model, setup.images(1, size, size)) * batch
    model = setup.prepare(model).train()
    optimizer = plain_optimizer(model, cfg["optim"])
    images = setup.images(batch, size, size)
    labels = torch.randint(0, num_classes, (batch, size, size), device=setup.device)
    return lambda: plain_update(model, optimizer, setup.precision, images, labels), flops


def gpu_utilisation(device: torch.device) -> float | None:
    """NVML's GPU utilisation (% of the last sample period with a kernel running), or ``None``
    where NVML is not available (no ``nvidia-ml-py``, or not an NVIDIA GPU)."""
    try:
        return float(torch.cuda.utilization(device))
    except (ModuleNotFoundError, RuntimeError):  # torch wraps NVML's absence in either
        return None


class LoaderWatch:
    """What the trainer's steps say about its loader: the seconds each step waited for its batch
    and, on a GPU, the utilisation read right after the step (does the loader keep it busy?)."""

    def __init__(self) -> None:
        self.data_waits: list[float] = []
        self.utilisation: list[float | None] = []

    def figures(self, repetitions: int) -> dict[str, float]:
        """Medians over the timed steps (the warm-up's come first)."""
        found: dict[str, float] = {}
        if self.data_waits:
            found["data_wait_s"] = statistics.median(self.data_waits[-repetitions:])
        readings = [value for value in self.utilisation[-repetitions:] if value is not None]
        if readings:
            found["gpu_utilisation_percent"] = statistics.median(readings)
        return found


def trainer_step(
    cfg: dict[str, Any], run_dir: Path, device: torch.device, watch: LoaderWatch
) -> Step:
    """One ``Trainer.train_step`` on the trainer's own training loader, as ``run()`` drives it;
    its data wait and GPU utilisation go to ``watch``."""
    trainer = Trainer(cfg, run_dir)
    batches = iter(trainer.train_loader())

    def step() -> None:
        watch.data_waits.append(trainer.train_step(batches)["data_seconds"])
        if device.type == "cuda":
            watch.utilisation.append(gpu_utilisation(device))

    return step


def reference_loader(cfg: dict[str, Any], setup: Setup) -> DataLoader:
    """A plain shuffling DataLoader over the configured training split and augmentation."""
    data_cfg = cfg["data"]
    augment = data_cfg["augment"]
    normalization = get_normalization(cfg["model"]["input_norm"])
    crop, scales, flip = augment["crop_size"], augment["scale_range"], augment["flip"]
    transform = train_transform(normalization, crop, scales, flip)
    workers = data_cfg["num_workers"]
    return DataLoader(
        build_dataset(data_cfg, data_cfg["train_split"], transform),
        batch_size=cfg["train"]["batch_size"],
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=setup.device.type == "cuda",
        persistent_workers=workers > 0,
    )


def reference_step(cfg: dict[str, Any], setup: Setup) -> Step:
    """A plain training loop (torchvision-reference style) on the same data and model."""
    loader = reference_loader(cfg, setup)
    info = dataset_info(cfg["data"])
    model = setup.prepare(build_model(cfg["model"], info.num_classes)).train()
    optimizer = plain_optimizer(model, cfg["optim"])

    def steps() -> Iterator[None]:
        while True:
            for batch in loader:
                images = batch["image"].to(setup.device, non_blocking=True)
                images = images.contiguous(memory_format=setup.memory_format)
                labels = batch["label"].to(setup.device, non_blocking=True)
                plain_update(model, optimizer, setup.precision, images, labels, info.ignore_index)
                yield

    iterator = steps()
    return lambda: next(iterator)


def step_figure(
    seconds: list[float], batch: int, flops: float, peak_rates: list[float] | None
) -> dict[str, Any]:
    """Images/s of a model step with its achieved GFLOP/s and, given the GFLOP/s of the peak GEMM
    in the same repetitions, the median of the fractions of peak."""
    achieved = rates(flops / 1e9, seconds)
    fractions = None
    if peak_rates is not None:
        fractions = [mine / best for mine, best in zip(achieved, peak_rates, strict=True)]
    return figure(
        rates(batch, seconds),
        "images/s",
        batch=batch,
        gflop_per_step=flops / 1e9,
        achieved_gflops=statistics.median(achieved),
        fraction_of_peak=statistics.median(fractions) if fractions else None,
        peak_gflops_alongside=statistics.median(peak_rates) if peak_rates else None,
    )


def throughput_ratios(top_seconds: list[float], bottom_seconds: list[float]) -> list[float]:
    """Throughput of ``top`` ÷ throughput of ``bottom`` (same images per step), repetition by
    repetition of an interleaved measurement."""
    return [bottom / top for top, bottom in zip(top_seconds, bottom_seconds, strict=True)]


def training_steps(
    cfg: dict[str, Any], args: argparse.Namespace, setup: Setup, watch: LoaderWatch
) -> tuple[dict[str, Step], dict[str, float]]:
    """The chosen training loops as steps, and the FLOPs of the model steps."""
    steps: dict[str, Step] = {}
    flops: dict[str, float] = {}
    parts = args.parts.split(",")
    if "step" in parts:
        for size in args.sizes:
            steps[f"step {size}"], flops[f"step {size}"] = model_step(cfg, setup, args.batch, size)
    if "e2e" in parts:
        steps["e2e"] = trainer_step(cfg, args.out / "train", setup.device, watch)
    if "reference" in parts:
        steps["reference"] = reference_step(cfg, setup)
    return steps, flops


def measure_training(args: argparse.Namespace, setup: Setup, peak: dict | None) -> dict[str, Any]:
    """The model step at each size, the trainer and the reference loop (and the peak GEMM),
    interleaved."""
    cfg = train_config(args)
    crop = cfg["data"]["augment"]["crop_size"]
    watch = LoaderWatch()
    steps, flops = training_steps(cfg, args, setup, watch)
    seconds, peak_rates = with_peak(steps, args, setup, peak)
    results: dict[str, Any] = {
        name: step_figure(seconds[name], args.batch, flops[name], peak_rates) for name in flops
    }
    for name in ("e2e", "reference"):
        if name in seconds:
            results[name] = figure(rates(args.batch, seconds[name]), "images/s", crop=crop)
    if "e2e" in results:
        results["e2e"].update(watch.figures(args.repetitions))
    if args.profile:
        profile_steps(steps, setup.device, args.out / "profiles")
    ratios = {"e2e ÷ step": ("e2e", f"step {crop}"), "e2e ÷ reference": ("e2e", "reference")}
    for label, (top, bottom) in ratios.items():
        if top in results and bottom in results:
            results[label] = figure(throughput_ratios(seconds[top], seconds[bottom]), "ratio")
    return results


def profile_steps(steps: dict[str, Step], device: torch.device, folder: Path) -> None:
    """One more call of each step under ``torch.profiler``: ``folder/<step>.txt`` gets its
    operators by self CPU time (and CUDA time on a GPU), for reading where a step's time goes."""
    folder.mkdir(parents=True, exist_ok=True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        sort = "self_cuda_time_total"
    for name, step in steps.items():
        with torch.profiler.profile(activities=activities) as profile:
            time_once(step, device)
        table = profile.key_averages().table(sort_by=sort, row_limit=25)
        (folder / f"{name.replace(' ', '_')}.txt").write_text(table + "\n")

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
from parsenet.data.loader import loader_workers
from parsenet.data.normalization import get_normalization
from parsenet.data.transforms import train_transform
from parsenet.engine.runtime.precision import Precision
from parsenet.engine.training.assembly import training_shape
from parsenet.engine.training.optim import build_optimizer
from parsenet.engine.training.trainer import Trainer
from parsenet.models import build_model
from parsenet.models.flops import TRAINING_FORWARDS, forward_flops

from .peak import peak_meter, with_peak
from .profiling import profile_steps
from .settings import Setup, layout_note, train_config
from .timing import Step, figure, rates

FORCED = {"NCHW": False, "NHWC": True}  # --compare-layouts: the model step in each layout too


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


class ModelStep:
    """Forward + backward + optimizer step of ``model`` (``num_classes`` outputs, the optimizer
    of ``optim_cfg``) on a fixed batch in memory (call it), its FLOPs (3 × forward) and layout;
    ``model`` is kept for profiling."""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optim_cfg: dict[str, Any],
        setup: Setup,
        batch: int,
        size: int,
        channels_last: bool | None = None,
    ) -> None:
        model = model.to(setup.device).train()
        images = setup.images(batch, size, size)
        self.flops = TRAINING_FORWARDS * forward_flops(model, images)
        self.layout = setup.layout(model, (batch, 3, size, size), True, channels_last)
        self.model = setup.prepare(model, self.layout)
        self.optimizer = plain_optimizer(self.model, optim_cfg)
        self.images = images.contiguous(memory_format=self.layout.memory_format)
        self.labels = torch.randint(0, num_classes, (batch, size, size), device=setup.device)
        self.precision = setup.precision

    def __call__(self) -> None:
        plain_update(self.model, self.optimizer, self.precision, self.images, self.labels)


def config_step(
    cfg: dict[str, Any], setup: Setup, batch: int, size: int, channels_last: bool | None = None
) -> ModelStep:
    """The :class:`ModelStep` of the model of the training config ``cfg`` (its ``model``,
    ``data`` for the number of classes, and ``optim``)."""
    num_classes = dataset_info(cfg["data"]).num_classes
    model = build_model(cfg["model"], num_classes)
    return ModelStep(model, num_classes, cfg["optim"], setup, batch, size, channels_last)


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
        self.layout: str | None = None

    def figures(self, repetitions: int) -> dict[str, Any]:
        """Medians over the timed steps (the warm-up's come first)."""
        found: dict[str, Any] = {"layout": self.layout}
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
    its data wait and GPU utilisation go to ``watch``, its layout to ``watch.layout``."""
    trainer = Trainer(cfg, run_dir)
    batches = iter(trainer.train_loader())
    layout = trainer.cfg["layout"]
    watch.layout = f"{layout['memory_format']} ({layout['decided_by']})"

    def step() -> None:
        watch.data_waits.append(trainer.train_step(batches)["data_seconds"])
        if device.type == "cuda":
            watch.utilisation.append(gpu_utilisation(device))

    step.model, step.loss = trainer.model, trainer.loss  # for profiling
    step.sample_shape = training_shape(
        trainer.cfg["data"], cfg["train"]["batch_size"], trainer.train_set
    )
    return step


def reference_loader(cfg: dict[str, Any], setup: Setup) -> DataLoader:
    """A plain shuffling DataLoader over the configured training split and augmentation."""
    data_cfg = cfg["data"]
    augment = data_cfg["augment"]
    normalization = get_normalization(cfg["model"]["input_norm"])
    crop, scales, flip = augment["crop_size"], augment["scale_range"], augment["flip"]
    transform = train_transform(normalization, crop, scales, flip)
    workers = loader_workers(data_cfg["num_workers"])  # as the trainer resolves it
    return DataLoader(
        build_dataset(data_cfg, data_cfg["train_split"], transform),
        batch_size=cfg["train"]["batch_size"],
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=setup.device.type == "cuda",
        persistent_workers=workers > 0,
    )


def reference_step(cfg: dict[str, Any], setup: Setup) -> tuple[Step, str]:
    """A plain training loop (torchvision-reference style) on the same data and model, in the
    layout the trainer takes; and that layout."""
    loader = reference_loader(cfg, setup)
    info = dataset_info(cfg["data"])
    model = build_model(cfg["model"], info.num_classes).to(setup.device)
    shape = training_shape(cfg["data"], cfg["train"]["batch_size"], loader.dataset)
    layout = setup.layout(model, shape, training=True)  # as the trainer chooses it
    model = setup.prepare(model, layout).train()
    optimizer = plain_optimizer(model, cfg["optim"])

    def steps() -> Iterator[None]:
        while True:
            for batch in loader:
                images = batch["image"].to(setup.device, non_blocking=True)
                images = images.contiguous(memory_format=layout.memory_format)
                labels = batch["label"].to(setup.device, non_blocking=True)
                plain_update(model, optimizer, setup.precision, images, labels, info.ignore_index)
                yield

    iterator = steps()
    step = lambda: next(iterator)  # noqa: E731
    step.model, step.sample_shape = model, shape
    return step, layout_note(layout)


def step_figure(
    seconds: list[float],
    batch: int,
    flops: float,
    peak_rates: list[float] | None,
    **about: Any,
) -> dict[str, Any]:
    """Images/s of a model step with its achieved GFLOP/s and, given the GFLOP/s of the peak GEMM
    in the same repetitions, the median of the fractions of peak (``about``: more details)."""
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
        **about,
    )


def throughput_ratios(top_seconds: list[float], bottom_seconds: list[float]) -> list[float]:
    """Throughput of ``top`` ÷ throughput of ``bottom`` (same images per step), repetition by
    repetition of an interleaved measurement."""
    return [bottom / top for top, bottom in zip(top_seconds, bottom_seconds, strict=True)]


def training_steps(
    cfg: dict[str, Any], args: argparse.Namespace, setup: Setup, watch: LoaderWatch
) -> tuple[dict[str, Step], dict[str, str]]:
    """The chosen training loops as steps (model steps as :class:`ModelStep`, with
    ``--compare-layouts`` also in each forced layout), and each loop's layout."""
    steps: dict[str, Step] = {}
    layouts: dict[str, str] = {}
    parts = args.parts.split(",")
    if "step" in parts:
        for size in args.sizes:
            steps[f"step {size}"] = config_step(cfg, setup, args.batch, size)
            for name, forced in FORCED.items() if args.compare_layouts else ():
                steps[f"step {size} {name}"] = config_step(cfg, setup, args.batch, size, forced)
    if "e2e" in parts:
        steps["e2e"] = trainer_step(cfg, args.out / "train", setup.device, watch)
    if "reference" in parts:
        steps["reference"], layouts["reference"] = reference_step(cfg, setup)
    return steps, layouts


def measure_training(args: argparse.Namespace, setup: Setup, peak: dict | None) -> dict[str, Any]:
    """The model step at each size, the trainer and the reference loop (and the peak GEMM),
    interleaved."""
    cfg = train_config(args)
    crop = cfg["data"]["augment"]["crop_size"]
    watch = LoaderWatch()
    steps, layouts = training_steps(cfg, args, setup, watch)
    seconds, peak_rates = with_peak(steps, args, setup, peak)
    results: dict[str, Any] = {
        name: step_figure(
            seconds[name], args.batch, step.flops, peak_rates, layout=layout_note(step.layout)
        )
        for name, step in steps.items()
        if isinstance(step, ModelStep)
    }
    for name in ("e2e", "reference"):
        if name in seconds:
            results[name] = figure(
                rates(args.batch, seconds[name]), "images/s", crop=crop, layout=layouts.get(name)
            )
    if "e2e" in results:
        results["e2e"].update(watch.figures(args.repetitions))
    if args.profile:
        profile_steps(steps, setup, args.out / "profiles", peak_meter(args, setup, peak))
    ratios = {"e2e ÷ step": ("e2e", f"step {crop}"), "e2e ÷ reference": ("e2e", "reference")}
    for size in args.sizes if args.compare_layouts else ():
        ratios[f"step {size}: NHWC ÷ NCHW"] = (f"step {size} NHWC", f"step {size} NCHW")
        ratios[f"step {size}: default ÷ best"] = (f"step {size}", best_of(seconds, size))
    for label, (top, bottom) in ratios.items():
        if top in results and bottom in results:
            results[label] = figure(throughput_ratios(seconds[top], seconds[bottom]), "ratio")
    return results


def best_of(seconds: dict[str, list[float]], size: int) -> str:
    """The faster forced layout of the model step at ``size`` (by median time)."""
    forced = [f"step {size} {name}" for name in FORCED]
    return min(forced, key=lambda name: statistics.median(seconds[name]))

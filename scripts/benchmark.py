"""Measure training and inference against the machine's own limit and a plain reference loop.

    python scripts/benchmark.py                                   # everything, CPU, float32
    python scripts/benchmark.py --device cuda --compile           # GPU: bf16 autocast, NHWC
    python scripts/benchmark.py --parts peak,step --sizes 320 --batch 4

Parts (``--parts``, all by default):

- ``peak``: the dense matmul rate of the machine, through both GEMM engines torch has (its BLAS
  behind ``torch.mm`` and, as a 1×1 convolution, the convolution library); the better one is the
  peak. Float32 (strict, no TF32) everywhere, and bfloat16 on a GPU.
- ``step``: forward + backward + SGD step of the model on tensors already in memory, per size in
  ``--sizes``; images/s and FLOP/s (counted by :mod:`parsenet.engine.flops`) as a fraction of the
  peak GEMM's rate measured alongside (the peak's engine takes a turn between the steps).
- ``e2e``: the real :class:`~parsenet.engine.trainer.Trainer` — its loader (workers, seeded
  sampler) and its ``train_step`` (precision, gradient norm, non-finite guard, schedule) — on
  decoded images (``--data``, CamVid by default); ``run()``'s logging, evaluations and
  checkpoints are outside the timed steps.
- ``reference``: a plain loop in torchvision-reference style (DataLoader, model, SGD,
  cross-entropy) on the same data and model.
- ``data``: one loader worker's images/s for the VOC train pipeline (scale, pad, crop, flip to
  each of ``--crops``) and the eval pipeline, decoding with Pillow and with OpenCV.
- ``inference``: whole-image evaluation at 500×375 in a fresh process: images/s, peak memory.
- ``predict``: ``parsenet-predict`` on ``--predict-images`` VOC images: wall time, per-image
  latency (the spacing of its output files) and start-up.
- ``scaling``: step time vs input size and vs batch size.

The training parts (``step``, ``e2e``, ``reference``) run interleaved, one step of each in turn,
so a load change on a shared machine hits them alike; their ratios are taken repetition by
repetition. ``--profile`` adds one profiled step of each (``OUT/profiles/``). Every figure is
the median of ``--repetitions`` timed repetitions after ``--warmup`` untimed ones, and the raw
repetitions are kept. ``OUT/benchmark.json`` holds everything (with versions, machine, threads,
load and command line); ``OUT/benchmark.md`` the tables.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import albumentations
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

import parsenet
from parsenet.config import compose
from parsenet.data import build_dataset, dataset_info
from parsenet.data.base import read_label
from parsenet.data.normalization import get_normalization
from parsenet.data.transforms import PairPipeline, eval_transform, train_transform
from parsenet.data.voc import voc_dataset
from parsenet.engine.checkpoint import save_checkpoint
from parsenet.engine.flops import TRAINING_FORWARDS, forward_flops
from parsenet.engine.inference import InferenceMode
from parsenet.engine.trainer import Trainer
from parsenet.models import build_model
from parsenet.models.pretrained import choose_input_norm
from parsenet.report import write_json

REPO = Path(__file__).resolve().parents[1]
PARTS = ("peak", "step", "e2e", "reference", "data", "inference", "predict", "scaling")
TRAINING_PARTS = ("step", "e2e", "reference")
# as configs/data/voc.yaml: $PARSENET_VOC, else the data root
DEFAULT_VOC = os.environ.get("PARSENET_VOC", os.environ.get("PARSENET_DATA_ROOT", "data"))
INFERENCE_SIZE = (375, 500)  # H×W of a typical VOC image
Step = Callable[[], None]


# ---------------------------------------------------------------------------------------------
# Timing and figures


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (GPU kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(step: Step, device: torch.device) -> float:
    """Seconds one call of ``step`` takes, its device work included."""
    started = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - started


def round_robin(
    steps: dict[str, Step], device: torch.device, warmup: int, repetitions: int
) -> dict[str, list[float]]:
    """Seconds of each step per repetition, the steps taking turns (after ``warmup`` turns), in
    a new seeded order every turn so that no step always follows the same one."""
    for _ in range(warmup):
        for step in steps.values():
            time_once(step, device)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    order = random.Random(0)
    for _ in range(repetitions):
        for name in order.sample(list(steps), len(steps)):
            seconds[name].append(time_once(steps[name], device))
    return seconds


def figure(values: list[float], unit: str, **derived: Any) -> dict[str, Any]:
    """A reported number: the median of ``values``, its unit, the raw values, derived values."""
    return {"median": statistics.median(values), "unit": unit, "raw": values, **derived}


def rates(amount: float, seconds: list[float]) -> list[float]:
    """``amount`` per second for each timing."""
    return [amount / value for value in seconds]


# ---------------------------------------------------------------------------------------------
# Configuration and precision


def train_config(args: argparse.Namespace) -> dict[str, Any]:
    """The real ``configs/train.yaml`` with the benchmark's settings, as plain containers."""
    overrides = [
        f"data={args.data}",
        f"device={args.device}",
        f"model.backbone.width_mult={args.width}",
        f"train.batch_size={args.batch}",
        f"train.amp={args.amp}",
        f"train.channels_last={str(args.channels_last).lower()}",
        f"train.compile={str(args.compile).lower()}",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.keep_snapshots=0",
        *args.override,
    ]
    resolved = compose("train", overrides)
    model_cfg = resolved["model"]
    model_cfg["input_norm"] = choose_input_norm(model_cfg["input_norm"], None)  # random weights
    return resolved


class Setup:
    """Device, precision and layout shared by every measurement."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.amp_dtype = torch.bfloat16 if args.amp == "bf16" else None
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.compile = args.compile

    def autocast(self):
        """The forward pass's precision context."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model on the device, in the layout, compiled if asked."""
        model = model.to(self.device, memory_format=self.memory_format)
        return torch.compile(model) if self.compile else model

    def images(self, batch: int, height: int, width: int) -> torch.Tensor:
        """A random input batch on the device, in the layout."""
        images = torch.randn(batch, 3, height, width, device=self.device)
        return images.contiguous(memory_format=self.memory_format)


def sgd(model: nn.Module, optim_cfg: dict[str, Any]) -> torch.optim.SGD:
    """SGD with the configured learning rate, momentum and weight decay."""
    return torch.optim.SGD(
        model.parameters(),
        lr=optim_cfg["lr"],
        momentum=optim_cfg["momentum"],
        weight_decay=optim_cfg["weight_decay"],
    )


# ---------------------------------------------------------------------------------------------
# Peak


def gemm_engines(n: int, dtype: torch.dtype, device: torch.device) -> dict[str, Step]:
    """One n×n×n matrix product through each GEMM engine: ``torch.mm`` (BLAS / cuBLAS) and a
    1×1 convolution over n channels and n pixels (oneDNN / cuDNN), channels last so that it is a
    plain (pixels × channels) · (channels × channels) product with no layout conversion."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    pixels = a.view(1, n // 64, 64, n).permute(0, 3, 1, 2)  # N×C×H×W view of NHWC memory
    kernel = b.view(n, n, 1, 1)
    return {"torch.mm": lambda: torch.mm(a, b), "conv1x1": lambda: F.conv2d(pixels, kernel)}


def measure_peak(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    """Dense matmul GFLOP/s per engine and dtype (float32 strictly: no TF32 on GPUs; bfloat16
    too on a GPU or under bf16 autocast); the best engine per dtype gives that dtype's peak."""
    dtypes = {"float32": torch.float32}
    if setup.device.type == "cuda" or setup.amp_dtype is not None:
        dtypes["bfloat16"] = torch.bfloat16
    results: dict[str, Any] = {}
    with strict_float32():
        for dtype_name, dtype in dtypes.items():
            steps = gemm_engines(args.peak_size, dtype, setup.device)
            inner = calls_per_repetition(next(iter(steps.values())), setup.device)
            batched = {name: repeat_calls(step, inner) for name, step in steps.items()}
            seconds = round_robin(batched, setup.device, args.warmup, args.repetitions)
            gflop = 2 * args.peak_size**3 * inner / 1e9
            engines = {
                f"{dtype_name} {name}": figure(rates(gflop, values), "GFLOP/s")
                for name, values in seconds.items()
            }
            results.update(engines)
            best = max(engines, key=lambda name: engines[name]["median"])
            engine = best.split(" ", 1)[1]
            results[f"{dtype_name} peak"] = figure(engines[best]["raw"], "GFLOP/s", engine=engine)
    return results


@contextmanager
def strict_float32() -> Iterator[None]:
    """Float32 products in float32, not TF32 (which GPUs otherwise use for convolutions)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def calls_per_repetition(step: Step, device: torch.device, seconds: float = 0.2) -> int:
    """How many calls of a short ``step`` fill about ``seconds`` (timer and launch noise)."""
    time_once(step, device)
    return max(1, math.ceil(seconds / time_once(step, device)))


def repeat_calls(step: Step, count: int) -> Step:
    """``step`` called ``count`` times in a row."""

    def repeated() -> None:
        for _ in range(count):
            step()

    return repeated


def peak_gemm(args: argparse.Namespace, setup: Setup, peak: dict | None) -> tuple[Step, float]:
    """The peak part's best GEMM for the model's precision as a step, and its GFLOP."""
    dtype = torch.bfloat16 if setup.amp_dtype is not None else torch.float32
    engine = peak[f"{str(dtype).removeprefix('torch.')} peak"]["engine"]
    step = gemm_engines(args.peak_size, dtype, setup.device)[engine]
    calls = calls_per_repetition(step, setup.device)
    return repeat_calls(step, calls), 2 * args.peak_size**3 * calls / 1e9


def with_peak(
    steps: dict[str, Step], args: argparse.Namespace, setup: Setup, peak: dict | None
) -> tuple[dict[str, list[float]], list[float] | None]:
    """Seconds of ``steps`` taking turns, with the peak GEMM taking its turn too when the peak
    was measured (so a fraction of peak compares rates measured side by side, whatever else
    runs on the machine); also the GEMM's GFLOP/s per repetition."""
    if peak is None:
        return round_robin(steps, setup.device, args.warmup, args.repetitions), None
    gemm, gflop = peak_gemm(args, setup, peak)
    seconds = round_robin({**steps, "peak": gemm}, setup.device, args.warmup, args.repetitions)
    return seconds, rates(gflop, seconds.pop("peak"))


# ---------------------------------------------------------------------------------------------
# Training: model step, the trainer, the reference loop


def model_step(cfg: dict[str, Any], setup: Setup, batch: int, size: int) -> tuple[Step, float]:
    """Forward + backward + SGD step on a fixed batch in memory, and its FLOPs (3 × forward)."""
    num_classes = dataset_info(cfg["data"]).num_classes
    model = build_model(cfg["model"], num_classes).to(setup.device)
    flops = TRAINING_FORWARDS * forward_flops(model, setup.images(1, size, size)) * batch
    model = setup.prepare(model).train()
    optimizer = sgd(model, cfg["optim"])
    images = setup.images(batch, size, size)
    labels = torch.randint(0, num_classes, (batch, size, size), device=setup.device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with setup.autocast():
            logits = model(images)
        F.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    return step, flops


def gpu_utilisation(device: torch.device) -> float | None:
    """NVML's GPU utilisation (% of the last sample period with a kernel running), or ``None``
    where NVML is not available (no ``nvidia-ml-py``, or not an NVIDIA GPU)."""
    try:
        return float(torch.cuda.utilization(device))
    except (ModuleNotFoundError, RuntimeError):  # torch wraps NVML's absence in either
        return None


def trainer_step(
    cfg: dict[str, Any], run_dir: Path, data_waits: list[float], utilisation: list[float | None]
) -> Step:
    """One ``Trainer.train_step`` on the trainer's own training loader, as ``run()`` drives it;
    the seconds each step waited for its batch go to ``data_waits`` and, on a GPU, its
    utilisation read right after the step to ``utilisation`` (does the loader keep it busy?)."""
    trainer = Trainer(cfg, run_dir)
    batches = iter(trainer.train_loader())

    def step() -> None:
        data_waits.append(trainer.train_step(batches)["data_seconds"])
        if trainer.device.type == "cuda":
            utilisation.append(gpu_utilisation(trainer.device))

    return step


def reference_step(cfg: dict[str, Any], setup: Setup) -> Step:
    """A plain training loop (torchvision-reference style) on the same data and model."""
    data_cfg = cfg["data"]
    augment = data_cfg["augment"]
    normalization = get_normalization(cfg["model"]["input_norm"])
    transform = train_transform(
        normalization, augment["crop_size"], augment["scale_range"], augment["flip"]
    )
    dataset = build_dataset(data_cfg, data_cfg["train_split"], transform)
    workers = data_cfg["num_workers"]
    loader = DataLoader(
        dataset,
        batch_size=cfg["train"]["batch_size"],
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=setup.device.type == "cuda",
        persistent_workers=workers > 0,
    )
    info = dataset_info(data_cfg)
    model = setup.prepare(build_model(cfg["model"], info.num_classes)).train()
    optimizer = sgd(model, cfg["optim"])

    def steps() -> Iterator[None]:
        while True:
            for batch in loader:
                images = batch["image"].to(setup.device, non_blocking=True)
                labels = batch["label"].to(setup.device, non_blocking=True)
                with setup.autocast():
                    logits = model(images.contiguous(memory_format=setup.memory_format))
                loss = F.cross_entropy(logits.float(), labels, ignore_index=info.ignore_index)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                yield

    iterator = steps()
    return lambda: next(iterator)


def measure_training(
    args: argparse.Namespace, setup: Setup, parts: list[str], peak: dict | None
) -> dict[str, Any]:
    """The model step at each size, the trainer and the reference loop (and the peak GEMM),
    interleaved."""
    cfg = train_config(args)
    crop = cfg["data"]["augment"]["crop_size"]
    steps: dict[str, Step] = {}
    flops: dict[str, float] = {}
    if "step" in parts:
        for size in args.sizes:
            steps[f"step {size}"], flops[f"step {size}"] = model_step(cfg, setup, args.batch, size)
    data_waits: list[float] = []
    utilisation: list[float | None] = []
    if "e2e" in parts:
        steps["e2e"] = trainer_step(cfg, args.out / "train", data_waits, utilisation)
    if "reference" in parts:
        steps["reference"] = reference_step(cfg, setup)
    seconds, peak_rates = with_peak(steps, args, setup, peak)
    results: dict[str, Any] = {
        name: step_figure(seconds[name], args.batch, flops[name], peak_rates) for name in flops
    }
    for name in ("e2e", "reference"):
        if name in seconds:
            results[name] = figure(rates(args.batch, seconds[name]), "images/s", crop=crop)
    if data_waits:  # the timed steps' waits (the warm-up's come first)
        results["e2e"]["data_wait_s"] = statistics.median(data_waits[-args.repetitions :])
    readings = [value for value in utilisation[-args.repetitions :] if value is not None]
    if readings:
        results["e2e"]["gpu_utilisation_percent"] = statistics.median(readings)
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


# ---------------------------------------------------------------------------------------------
# Data pipeline


def decode_pillow(path: Path) -> np.ndarray:
    """RGB uint8 through Pillow."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def decode_opencv(path: Path) -> np.ndarray:
    """RGB uint8 through OpenCV (EXIF orientation ignored, as Pillow does), as ``read_image``."""
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    decoded = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flags)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


DECODERS = {"pillow": decode_pillow, "opencv": decode_opencv}


def pipeline_pass(
    pairs: list[tuple[Path, Path]], decode: Callable[[Path], np.ndarray], transform: PairPipeline
) -> None:
    """What a loader worker does per sample: decode image and label, reseed, transform."""
    for index, (image_path, label_path) in enumerate(pairs):
        transform.reseed(index)
        transform(decode(image_path), read_label(label_path))


def measure_data(args: argparse.Namespace) -> dict[str, Any]:
    """Images/s of one worker (one thread, as in a DataLoader worker) per pipeline and decoder,
    and how far the two decoders' pixels differ."""
    pairs = voc_dataset(args.voc, "train").pairs[: args.voc_images]
    normalization = get_normalization("torchvision")
    pipelines = {f"train {crop}": train_transform(normalization, crop) for crop in args.crops}
    pipelines["eval"] = eval_transform(normalization)
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    try:
        steps = {
            f"{name} {decoder}": bind_pass(pairs, DECODERS[decoder], transform)
            for name, transform in pipelines.items()
            for decoder in DECODERS
        }
        seconds = round_robin(steps, torch.device("cpu"), args.warmup, args.repetitions)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    results = {
        name: figure(rates(len(pairs), values), "images/s per worker")
        for name, values in seconds.items()
    }
    results["decoder agreement"] = decoder_agreement(pairs)
    return results


def bind_pass(
    pairs: list[tuple[Path, Path]], decode: Callable[[Path], np.ndarray], transform: PairPipeline
) -> Step:
    """One pass of :func:`pipeline_pass` as a step."""
    return lambda: pipeline_pass(pairs, decode, transform)


def decoder_agreement(pairs: list[tuple[Path, Path]]) -> dict[str, Any]:
    """The largest pixel difference between Pillow and OpenCV decoding, and the share of values
    that differ at all."""
    largest, differing, total = 0, 0, 0
    for image_path, _ in pairs:
        difference = np.abs(decode_pillow(image_path).astype(np.int16) - decode_opencv(image_path))
        largest = max(largest, int(difference.max()))
        differing += int(np.count_nonzero(difference))
        total += difference.size
    return {"max_abs_difference": largest, "differing_fraction": differing / total}


# ---------------------------------------------------------------------------------------------
# Inference and prediction


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
    before_mb = peak_resident_mb()
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setup.device)

    @torch.no_grad()
    def step() -> None:
        with setup.autocast():
            whole.scores(model, images).argmax(dim=1)

    seconds = round_robin({"inference": step}, setup.device, args.warmup, args.repetitions)
    if setup.device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(setup.device) / 2**20
    else:
        peak_mb = peak_resident_mb()
    return {"seconds": seconds["inference"], "peak_mb": peak_mb, "before_mb": before_mb}


def peak_resident_mb() -> float:
    """This process's peak resident memory: ``VmHWM`` on Linux, which starts afresh in a new
    program (``ru_maxrss`` keeps the parent's peak across fork and exec); else ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    cfg = train_config(args)
    checkpoint = write_checkpoint(cfg, folder / "model.pt")
    images = [image for image, _ in voc_dataset(args.voc, "val").pairs[: args.predict_images]]
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


# ---------------------------------------------------------------------------------------------
# Scaling


def measure_scaling(args: argparse.Namespace, setup: Setup, peak: dict | None) -> dict[str, Any]:
    """Model-step time vs input size (batch 1) and vs batch size (at the first of ``--sizes``);
    on a GPU also the peak memory of each."""
    cfg = train_config(args)
    shapes = [(1, size) for size in args.scaling_sizes]
    shapes += [(batch, args.sizes[0]) for batch in args.scaling_batches]
    results: dict[str, Any] = {}
    for batch, size in dict.fromkeys(shapes):
        if setup.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(setup.device)
        step, flops = model_step(cfg, setup, batch, size)
        seconds, peak_rates = with_peak({"step": step}, args, setup, peak)
        entry = step_figure(seconds["step"], batch, flops, peak_rates)
        if setup.device.type == "cuda":  # a CPU process's peak cannot be reset between shapes
            entry["peak_gpu_mb"] = torch.cuda.max_memory_allocated(setup.device) / 2**20
        results[f"size {size} batch {batch}"] = entry
    return results


# ---------------------------------------------------------------------------------------------
# Report


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """Versions, machine, threads and the command line."""
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now().isoformat(timespec="seconds"),
        "versions": {
            "parsenet": parsenet.__version__,
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "pillow": Image.__version__,
            "albumentations": albumentations.__version__,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_name(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
        },
        "threads": {"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads()},
        "settings": {key: str(value) for key, value in vars(args).items()},
    }
    if args.device.startswith("cuda"):
        record["machine"]["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return record


def cpu_name() -> str:
    """The CPU model as the kernel reports it (the platform's guess elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def markdown(report: dict[str, Any]) -> str:
    """The report's figures as one markdown table per part."""
    environment = report["environment"]
    lines = [f"Command: `{environment['command']}`", ""]
    for part, figures in report["results"].items():
        before, after = environment["load_average_per_part"][part]
        lines += [
            f"### {part} (1-minute load average {before:.2f} → {after:.2f})",
            "",
            "| figure | median | unit | details |",
            "|---|---|---|---|",
        ]
        for name, item in figures.items():
            details = ", ".join(
                f"{key} {format_number(value)}"
                for key, value in item.items()
                if key not in ("median", "unit", "raw")
            )
            median = format_number(item.get("median"))
            lines.append(f"| {name} | {median} | {item.get('unit', '')} | {details} |")
        lines.append("")
    return "\n".join(lines)


def format_number(value: Any) -> str:
    """Three significant figures for floats, everything else as it is."""
    if value is None:
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""

    def numbers(text: str) -> list[int]:
        return [int(value) for value in text.split(",") if value]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated, of: " + ",".join(PARTS)
    )
    parser.add_argument("--sizes", type=numbers, default=[320, 500], help="model-step sizes")
    parser.add_argument("--batch", type=int, default=2, help="training batch size")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    parser.add_argument("--width", type=float, default=1.0, help="model.backbone.width_mult")
    parser.add_argument(
        "--amp",
        choices=("auto", "off", "bf16"),
        default="auto",
        help="autocast dtype; auto: bf16 on GPU, off (float32) on CPU",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC layout (default: on GPU only)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    parser.add_argument(
        "--profile", action="store_true", help="profile one more training step of each kind"
    )
    parser.add_argument("--data", default="camvid", help="dataset config of e2e/reference")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="a further train.yaml override (repeatable), e.g. data.num_workers=1",
    )
    parser.add_argument(
        "--voc",
        type=Path,
        default=Path(DEFAULT_VOC),
        help="VOC root (holds VOCdevkit/) for data, predict",
    )
    parser.add_argument("--voc-images", type=int, default=40, help="images per data-pipeline pass")
    parser.add_argument("--crops", type=numbers, default=[320, 500], help="train pipeline crops")
    parser.add_argument("--predict-images", type=int, default=4)
    parser.add_argument(
        "--peak-size", type=int, default=None, help="GEMM size n (default 4096 on CPU, 8192 on GPU)"
    )
    parser.add_argument("--scaling-sizes", type=numbers, default=[256, 320, 384, 448, 512])
    parser.add_argument("--scaling-batches", type=numbers, default=[1, 2, 4])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default runs/benchmark/<time>)"
    )
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    if args.amp == "auto":
        args.amp = "bf16" if on_gpu else "off"
    if args.channels_last is None:
        args.channels_last = on_gpu
    args.peak_size = args.peak_size or (8192 if on_gpu else 4096)
    args.out = args.out or REPO / "runs" / "benchmark" / datetime.now().strftime(
        "%Y-%m-%d_%H-%M-%S"
    )
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    if args.peak_size % 64:
        parser.error("--peak-size must be a multiple of 64")
    if args.predict_images < 2:
        parser.error("--predict-images must be at least 2 (latency is the spacing of outputs)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen parts, write ``benchmark.json`` and ``benchmark.md``, print the tables."""
    args = parse_args(argv)
    parts = args.parts.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    setup = Setup(args)
    report: dict[str, Any] = {"environment": environment(args), "results": {}}
    results = report["results"]
    loads = report["environment"]["load_average_per_part"] = {}
    measurements: dict[str, Callable[[], dict[str, Any]]] = {
        "peak": lambda: measure_peak(args, setup),
        "training": lambda: measure_training(args, setup, parts, results.get("peak")),
        "data": lambda: measure_data(args),
        "inference": lambda: measure_inference(args),
        "predict": lambda: measure_predict(args),
        "scaling": lambda: measure_scaling(args, setup, results.get("peak")),
    }
    chosen = {*parts, "training"} if set(parts) & set(TRAINING_PARTS) else set(parts)
    for name, measure in measurements.items():
        if name in chosen:
            before = os.getloadavg()[0]
            print(f"measuring {name} (load average {before:.2f})", flush=True)
            results[name] = measure()
            loads[name] = [before, os.getloadavg()[0]]
    write_json(args.out / "benchmark.json", report)
    table = markdown(report)
    (args.out / "benchmark.md").write_text(table + "\n")
    print(table)
    print(f"written: {args.out / 'benchmark.json'}, {args.out / 'benchmark.md'}")
    return report


if __name__ == "__main__":
    main()

"""The machine's dense matmul rate through each GEMM engine torch has, and that peak GEMM as a
step to time beside others."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from parsenet.engine.runtime.process import strict_float32

from .settings import Setup
from .timing import (
    Step,
    calls_per_repetition,
    figure,
    rates,
    repeat_calls,
    round_robin,
    time_once,
)


def gemm_engines(n: int, dtype: torch.dtype, device: torch.device) -> dict[str, Step]:
    """One n×n×n matrix product through each GEMM engine: ``torch.mm`` (BLAS / cuBLAS) and a
    1×1 convolution over n channels and n pixels (oneDNN / cuDNN), channels last so that it is a
    plain (pixels × channels) · (channels × channels) product with no layout conversion."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    pixels = a.view(1, n // 64, 64, n).permute(0, 3, 1, 2)  # N×C×H×W view of NHWC memory
    kernel = b.view(n, n, 1, 1)
    return {"torch.mm": lambda: torch.mm(a, b), "conv1x1": lambda: F.conv2d(pixels, kernel)}


def gemm_gflop(n: int, calls: int) -> float:
    """GFLOP of ``calls`` n×n×n products."""
    return 2 * n**3 * calls / 1e9


def engine_rates(
    dtype_name: str, args: argparse.Namespace, setup: Setup
) -> dict[str, dict[str, Any]]:
    """GFLOP/s of each engine in ``dtype_name``, the engines taking turns, plus the best one as
    that dtype's peak."""
    steps = gemm_engines(args.peak_size, getattr(torch, dtype_name), setup.device)
    calls = calls_per_repetition(next(iter(steps.values())), setup.device)
    batched = {name: repeat_calls(step, calls) for name, step in steps.items()}
    seconds = round_robin(batched, setup.device, args.warmup, args.repetitions)
    gflop = gemm_gflop(args.peak_size, calls)
    engines = {
        f"{dtype_name} {name}": figure(rates(gflop, values), "GFLOP/s")
        for name, values in seconds.items()
    }
    best = max(engines, key=lambda name: engines[name]["median"])
    engine = best.split(" ", 1)[1]
    engines[f"{dtype_name} peak"] = figure(engines[best]["raw"], "GFLOP/s", engine=engine)
    return engines


def measure_peak(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    """Dense matmul GFLOP/s per engine and dtype (float32 strictly: no TF32 on GPUs; bfloat16
    too on a GPU or under bf16 autocast); the best engine per dtype gives that dtype's peak."""
    dtype_names = ["float32"]
    if setup.device.type == "cuda" or setup.precision.dtype is not None:
        dtype_names.append("bfloat16")
    results: dict[str, Any] = {}
    with strict_float32():
        for dtype_name in dtype_names:
            results.update(engine_rates(dtype_name, args, setup))
    return results


def peak_gemm(args: argparse.Namespace, setup: Setup, peak: dict) -> tuple[Step, float]:
    """The peak part's best GEMM for the model's precision as a step, and its GFLOP."""
    dtype = torch.float32 if setup.precision.dtype is None else torch.bfloat16
    engine = peak[f"{str(dtype).removeprefix('torch.')} peak"]["engine"]
    step = gemm_engines(args.peak_size, dtype, setup.device)[engine]
    calls = calls_per_repetition(step, setup.device)
    return repeat_calls(step, calls), gemm_gflop(args.peak_size, calls)


def peak_meter(
    args: argparse.Namespace, setup: Setup, peak: dict | None
) -> Callable[[], float] | None:
    """A function timing the peak GEMM once (about 0.2 s) and returning its GFLOP/s now, or
    None when the peak was not measured."""
    if peak is None:
        return None
    gemm, gflop = peak_gemm(args, setup, peak)
    return lambda: gflop / time_once(gemm, setup.device)


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

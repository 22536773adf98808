"""Timing steps in turns, and the figures reported from the timings."""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

Step = Callable[[], None]


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


def figure(values: list[float], unit: str, **derived: Any) -> dict[str, Any]:
    """A reported number: the median of ``values``, its unit, the raw values, derived values."""
    return {"median": statistics.median(values), "unit": unit, "raw": values, **derived}


def rates(amount: float, seconds: list[float]) -> list[float]:
    """``amount`` per second for each timing."""
    return [amount / value for value in seconds]

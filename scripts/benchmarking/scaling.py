"""Model-step time against input size and batch size."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from parsenet.engine.runtime.process import peak_memory_mb

from .peak import with_peak
from .settings import Setup, layout_note, train_config
from .training import config_step, step_figure


def measure_scaling(args: argparse.Namespace, setup: Setup, peak: dict | None) -> dict[str, Any]:
    """Model-step time vs input size (batch 1) and vs batch size (at the first of ``--sizes``);
    on a GPU also the peak memory of each."""
    cfg = train_config(args)
    shapes = [(1, size) for size in args.scaling_sizes]
    shapes += [(batch, args.sizes[0]) for batch in args.scaling_batches]
    on_gpu = setup.device.type == "cuda"
    results: dict[str, Any] = {}
    for batch, size in dict.fromkeys(shapes):
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(setup.device)
        step = config_step(cfg, setup, batch, size)
        seconds, peak_rates = with_peak({"step": step}, args, setup, peak)
        entry = step_figure(
            seconds["step"], batch, step.flops, peak_rates, layout=layout_note(step.layout)
        )
        if on_gpu:  # a CPU process's peak cannot be reset between shapes
            entry["peak_gpu_mb"] = peak_memory_mb(setup.device)
        results[f"size {size} batch {batch}"] = entry
    return results

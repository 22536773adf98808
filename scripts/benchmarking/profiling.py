"""One profiled step of each training loop: its operators by self time, and — on a CPU — the
model's layers, forward and backward, each against the GEMM peak.

The layer table comes from one ``torch.profiler`` run: every module's forward is a
``record_function`` range (``layer::<name>``), so an operator belongs to the innermost module that
called it; the backward nodes carry the sequence number of the forward operator that made them,
which gives each layer its backward time too. Work outside the model is named by its operators
(the loss, the optimizer, gradient accumulation). FLOPs per layer come from
:mod:`parsenet.models.flops`: a forward pass counts once, its backward twice (input and weight
gradients; once for a layer whose input needs no gradient, such as conv1_1).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parsenet.models.flops import count_macs

from .settings import Setup
from .timing import Step, time_once

BACKWARD = "autograd::engine::evaluate_function: "
LOSS_OPERATORS = ("aten::cross_entropy_loss", "aten::nll_loss", "aten::log_softmax", "aten::_log")
COPIES = ("aten::copy_", "aten::contiguous", "aten::clone", "aten::_to_copy")


@contextmanager
def layer_ranges(model: nn.Module, loss: nn.Module | None = None) -> Iterator[dict[str, bool]]:
    """Every module's forward as a profiler range ``layer::<name>`` (the model itself: ``model``,
    a loss module: ``(loss)``) while inside; yields, per module name, whether its input needed a
    gradient."""
    open_ranges: dict[str, list[Any]] = defaultdict(list)
    needs_gradient: dict[str, bool] = {}
    handles = []
    modules = list(model.named_modules()) + ([("(loss)", loss)] if loss is not None else [])
    for name, module in modules:
        label = name or "model"

        def enter(module: nn.Module, args: tuple, label: str = label) -> None:
            needs_gradient[label] = bool(args) and getattr(args[0], "requires_grad", False)
            span = torch.profiler.record_function(f"layer::{label}")
            span.__enter__()
            open_ranges[label].append(span)

        def leave(module: nn.Module, args: tuple, output: Any, label: str = label) -> None:
            open_ranges[label].pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield needs_gradient
    finally:
        for handle in handles:
            handle.remove()


def enclosing_layer(event: Any) -> str | None:
    """The innermost ``layer::`` range around a profiler event, if any."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("layer::"):
            return parent.name.removeprefix("layer::")
        parent = parent.cpu_parent
    return None


def outermost(event: Any) -> Any:
    """The top-level event ``event`` is part of (itself at the top)."""
    while event.cpu_parent is not None:
        event = event.cpu_parent
    return event


def outside_name(event: Any) -> str:
    """What a top-level event outside the model is, for the table."""
    name = event.name.removeprefix(BACKWARD)
    if event.name.startswith(LOSS_OPERATORS) or "Nll" in name or "LogSoftmax" in name:
        return "(loss)"
    if name.startswith("Optimizer."):
        return "(optimizer)"
    if "AccumulateGrad" in name:
        return "(gradient accumulation)"
    return f"({name})"


def layer_times(events: list[Any]) -> dict[str, dict[str, float]]:
    """Forward and backward milliseconds per layer (a module's own, its sub-modules' apart) and
    of the work outside the model."""
    times: dict[str, dict[str, float]] = defaultdict(lambda: {"forward": 0.0, "backward": 0.0})
    # Forward sequence number → layer (or outside name). Operators that make no autograd node
    # carry the number the next node will get, so the last operator with a number, in time, is
    # the one whose node it is.
    owner: dict[int, str] = {}
    for event in sorted(events, key=lambda event: event.time_range.start):
        if event.name.startswith("layer::") or outermost(event).name.startswith(BACKWARD):
            continue
        if event.sequence_nr >= 0:
            owner[event.sequence_nr] = enclosing_layer(event) or outside_name(event)
    for event in events:
        milliseconds = event.cpu_time_total / 1e3
        if event.name.startswith("layer::"):
            layer = event.name.removeprefix("layer::")
            children = sum(child.cpu_time_total / 1e3 for child in descendants_in_layers(event))
            times[layer]["forward"] += milliseconds - children
        elif event.name.startswith(BACKWARD):
            times[owner.get(event.sequence_nr, outside_name(event))]["backward"] += milliseconds
        elif event.cpu_parent is None and enclosing_layer(event) is None:
            times[outside_name(event)]["forward"] += milliseconds
    return dict(times)


def descendants_in_layers(event: Any) -> Iterator[Any]:
    """The outermost ``layer::`` ranges below ``event`` (its direct sub-modules)."""
    for child in event.cpu_children:
        if child.name.startswith("layer::"):
            yield child
        else:
            yield from descendants_in_layers(child)


def copy_milliseconds(events: list[Any]) -> dict[str, float]:
    """Self time of copying operators (layout conversions among them) per layer they ran in."""
    found: dict[str, float] = defaultdict(float)
    for event in events:
        if event.name in COPIES:
            found[enclosing_layer(event) or "(outside the model)"] += (
                event.self_cpu_time_total / 1e3
            )
    return dict(found)


def layer_gflop(macs: int, spent: dict[str, float], needs_gradient: bool) -> float:
    """GFLOP of a layer that did ``macs`` MACs forward and spent ``spent`` (forward and backward
    milliseconds): the forward once, and when it ran backward the gradient of its weights and,
    if its input needed one, of its input too."""
    backward = (2 if needs_gradient else 1) if spent["backward"] else 0
    return 2 * macs * (1 + backward) / 1e9


@dataclass
class LayerProfile:
    """One profiled call of a step, per layer of its model (see the module docstring): forward
    and backward milliseconds, MACs and whether the input needed a gradient per layer, the
    call's milliseconds, the GEMM peak timed just before and after, copies per layer."""

    times: dict[str, dict[str, float]]
    macs: dict[str, int]
    needs_gradient: dict[str, bool]
    step_ms: float
    peak_gflops: float | None
    copies: dict[str, float]


def layer_table(layers: LayerProfile) -> str:
    """The markdown table: per layer forward and backward time, share of the step, GFLOP/s and
    the fraction of the GEMM peak; then the copies."""
    step_ms, peak_gflops, macs = layers.step_ms, layers.peak_gflops, layers.macs
    lines = [
        f"Step: {step_ms:.1f} ms (profiled). GEMM peak: "
        + (
            f"{peak_gflops:.0f} GFLOP/s (timed just before and after)."
            if peak_gflops
            else "not measured."
        ),
        "",
        "| layer | forward ms | backward ms | share of step | GFLOP | GFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = sorted(layers.times.items(), key=lambda item: -sum(item[1].values()))
    for layer, spent in rows:
        total = spent["forward"] + spent["backward"]
        if total < 0.05 * step_ms / 100:  # under 0.05 % of the step
            continue
        gflop = rate = fraction = None
        if macs.get(layer):
            gflop = layer_gflop(macs[layer], spent, layers.needs_gradient.get(layer, True))
            rate = gflop / (total / 1e3) if total else None
            fraction = rate / peak_gflops if rate and peak_gflops else None
        cells = [
            layer,
            f"{spent['forward']:.1f}",
            f"{spent['backward']:.1f}",
            f"{100 * total / step_ms:.1f} %",
            "" if gflop is None else f"{gflop:.2f}",
            "" if rate is None else f"{rate:.0f}",
            "" if fraction is None else f"{fraction:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    copies = {where: ms for where, ms in layers.copies.items() if ms >= 0.1}
    if copies:
        spent = ", ".join(f"{where} {ms:.1f} ms" for where, ms in sorted(copies.items()))
        lines += ["", f"Copies (layout conversions among them), self time: {spent}."]
    return "\n".join(lines) + "\n"


def run_profiled(
    step: Step, setup: Setup, model: nn.Module | None = None, loss: nn.Module | None = None
) -> tuple[Any, float, dict[str, bool]]:
    """One call of ``step`` under ``torch.profiler`` (CPU activity, and CUDA's on a GPU), with
    the layers of ``model`` (and ``loss``) as ranges when given: the profile, the call's
    milliseconds and, per layer, whether its input needed a gradient."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if setup.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with (
        layer_ranges(model, loss) if model is not None else nullcontext_dict() as needs_gradient,
        torch.profiler.profile(activities=activities) as profile,
    ):
        step_ms = 1e3 * time_once(step, setup.device)
    return profile, step_ms, needs_gradient


def profile_layers(
    step: Step, model: nn.Module, setup: Setup, peak_gflops: Callable[[], float] | None
) -> tuple[Any, LayerProfile]:
    """One call of ``step`` profiled layer by layer (a CPU, ``model`` not compiled), with the GEMM
    peak that ``peak_gflops`` measures just before and after: the profile and its
    :class:`LayerProfile`."""
    before = peak_gflops() if peak_gflops else None
    profile, step_ms, needs_gradient = run_profiled(step, setup, model, getattr(step, "loss", None))
    alongside = (before + peak_gflops()) / 2 if peak_gflops else None
    events = list(profile.events())
    layers = LayerProfile(
        times=layer_times(events),
        macs=count_macs(model, step_input(step, model)),
        needs_gradient=needs_gradient,
        step_ms=step_ms,
        peak_gflops=alongside,
        copies=copy_milliseconds(events),
    )
    return profile, layers


def profile_steps(
    steps: dict[str, Step],
    setup: Setup,
    folder: Path,
    peak_gflops: Callable[[], float] | None,
) -> dict[str, LayerProfile]:
    """One more call of each step under ``torch.profiler``: ``folder/<step>.txt`` gets its
    operators by self CPU time (and CUDA time on a GPU); on a CPU, for steps that expose their
    ``model``, ``folder/<step>_layers.md`` gets the layer table (see the module docstring)
    against the GEMM peak that ``peak_gflops`` measures just before and after the step. Returns
    the :class:`LayerProfile` of each step profiled layer by layer."""
    folder.mkdir(parents=True, exist_ok=True)
    sort = "self_cuda_time_total" if setup.device.type == "cuda" else "self_cpu_time_total"
    by_layer: dict[str, LayerProfile] = {}
    for name, step in steps.items():
        stem = name.replace(" ", "_")
        model = getattr(step, "model", None)
        if model is not None and setup.device.type == "cpu" and not setup.compile:
            profile, by_layer[name] = profile_layers(step, model, setup, peak_gflops)
            (folder / f"{stem}_layers.md").write_text(f"# {name}\n\n{layer_table(by_layer[name])}")
        else:
            profile, _, _ = run_profiled(step, setup)
        table = profile.key_averages().table(sort_by=sort, row_limit=25)
        (folder / f"{stem}.txt").write_text(table + "\n")
    return by_layer


@contextmanager
def nullcontext_dict() -> Iterator[dict[str, bool]]:
    """No ranges (a GPU or compiled model): an empty gradient map."""
    yield {}


def step_input(step: Step, model: nn.Module) -> torch.Tensor:
    """An input batch for counting the layers' MACs: the step's own images, or zeros of the
    ``sample_shape`` of loops that draw theirs from a loader."""
    images = getattr(step, "images", None)
    if images is not None:
        return images
    shape = getattr(step, "sample_shape", None) or (2, 3, 320, 320)
    return torch.zeros(*shape, device=next(model.parameters()).device)

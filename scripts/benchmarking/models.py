"""What each model costs, measured side by side: parameters, forward GFLOPs at 500×375, the
training step (images/s, fraction of the peak GEMM timed in the same turns), whole-image
inference (images/s, every model taking turns in one fresh process; peak memory, each model in
a fresh process of its own) and, for models with depthwise convolutions, each layer kind's
share of the FLOPs and of the time and the rate it reaches against the GEMM peak.

A model is an experiment (``configs/experiment/<name>.yaml``: its model node, its dataset's
classes and its optimizer; random weights) or ``torchvision:<builder>``, a model of
``torchvision.models.segmentation`` built with ``weights=None, weights_backbone=None`` and VOC's
21 classes (its dict output's ``out``), timed beside the others as a reference.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import segmentation

from parsenet.config import compose, config_names
from parsenet.data import dataset_info
from parsenet.models import build_model
from parsenet.models.flops import forward_flops

from .inference import (
    INFERENCE_SIZE,
    in_fresh_process,
    peak_after_warmup,
    program_peak_resident_mb,
    whole_image_step,
)
from .peak import peak_meter, with_peak
from .profiling import LayerProfile, layer_gflop, profile_steps
from .report import format_number
from .settings import Setup, layout_note
from .timing import Step, figure
from .training import ModelStep, step_figure, throughput_ratios

REFERENCE = "torchvision:"
# Every trunk with its heads (VOC 2012 aug experiments), then torchvision's own models.
DEFAULT_MODELS = (
    "parsenet_vgg16-os8_voc12aug",
    "parsenet-baseline_resnet50-os8_voc12aug",
    "parsenet_resnet50-os8_voc12aug",
    "parsenet-early_resnet50-os8_voc12aug",
    "deeplabv3-aspp_resnet50-os8_voc12aug",
    "parsenet-baseline_resnet101-os8_voc12aug",
    "parsenet_resnet101-os8_voc12aug",
    "parsenet-early_resnet101-os8_voc12aug",
    "deeplabv3-aspp_resnet101-os8_voc12aug",
    "parsenet-baseline_mobilenetv3-os16_voc12aug",
    "parsenet_mobilenetv3-os16_voc12aug",
    "parsenet-early_mobilenetv3-os16_voc12aug",
    "deeplabv3-aspp_mobilenetv3-os16_voc12aug",
    "lraspp_mobilenetv3-os16_voc12aug",
    "torchvision:lraspp_mobilenet_v3_large",
    "torchvision:deeplabv3_mobilenet_v3_large",
    "torchvision:deeplabv3_resnet50",
)
# Every model's inference speed is also given per repetition as a multiple of this one's.
BASELINE = "torchvision:lraspp_mobilenet_v3_large"
INFERENCE = f"inference {INFERENCE_SIZE[1]}×{INFERENCE_SIZE[0]}"
INFERENCE_SHAPE = (1, 3, *INFERENCE_SIZE)  # one image
DEPTHWISE, DENSE, GROUPED, OTHER = "depthwise conv", "dense conv", "grouped conv", "other"


@dataclass(frozen=True)
class ModelSpec:
    """What builds one model: its name, its model node (None for a torchvision reference), its
    number of classes and its optimizer node."""

    name: str
    model_cfg: dict[str, Any] | None
    num_classes: int
    optim_cfg: dict[str, Any]


def unknown_models(names: Iterable[str]) -> list[str]:
    """The names that are neither an experiment nor ``torchvision:`` and a segmentation
    builder of torchvision."""
    builders = {REFERENCE + name for name in torchvision.models.list_models(module=segmentation)}
    known = set(config_names("experiment")) | builders
    return [name for name in names if name not in known]


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of an experiment (random weights) or a torchvision reference (VOC's
    classes, the default optimizer)."""
    reference = name.startswith(REFERENCE)
    overrides = ["data=voc"] if reference else [f"experiment={name}"]
    cfg = compose("train", [*overrides, "model.backbone.pretrained=none"])
    model_cfg = None if reference else cfg["model"]
    return ModelSpec(name, model_cfg, dataset_info(cfg["data"]).num_classes, cfg["optim"])


class MainOutput(nn.Module):
    """A torchvision segmentation model's main scores (``out`` of the dict it returns)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)["out"]


def build(spec: ModelSpec) -> nn.Module:
    """The randomly initialised model of ``spec``, returning N×K×H×W scores."""
    if spec.model_cfg is None:
        builder = getattr(segmentation, spec.name.removeprefix(REFERENCE))
        return MainOutput(
            builder(weights=None, weights_backbone=None, num_classes=spec.num_classes)
        )
    return build_model(spec.model_cfg, spec.num_classes)


def layer_kind(module: nn.Module) -> str:
    """``depthwise conv`` (a convolution of one input channel per group, groups > 1), ``grouped
    conv`` (other groups > 1), ``dense conv`` (other convolutions, transposed ones, linear
    layers) or ``other``."""
    if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        return OTHER
    groups = getattr(module, "groups", 1)
    if groups == 1:
        return DENSE
    return DEPTHWISE if module.in_channels == groups else GROUPED


def has_depthwise(model: nn.Module) -> bool:
    """Whether ``model`` has a depthwise convolution."""
    return any(layer_kind(module) == DEPTHWISE for module in model.modules())


def kind_breakdown(layers: LayerProfile, model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per layer kind of ``model`` (:func:`layer_kind`) in one profiled call, as report figures:
    milliseconds (the median of the one call), share of the call, share of the counted FLOPs,
    GFLOP/s and fraction of the GEMM peak; ``other`` is the rest of the call (normalisation,
    activations, pooling, upsampling, loss, optimizer, profiler overhead)."""
    kinds = {name or "model": layer_kind(module) for name, module in model.named_modules()}
    spent = {kind: {"ms": 0.0, "gflop": 0.0} for kind in (DEPTHWISE, GROUPED, DENSE)}
    for layer, times in layers.times.items():
        kind = kinds.get(layer, OTHER)
        if kind == OTHER:
            continue
        spent[kind]["ms"] += times["forward"] + times["backward"]
        macs = layers.macs.get(layer, 0)
        spent[kind]["gflop"] += layer_gflop(macs, times, layers.needs_gradient.get(layer, True))
    rest = layers.step_ms - sum(kind["ms"] for kind in spent.values())
    spent[OTHER] = {"ms": rest, "gflop": 0.0}
    counted = sum(kind["gflop"] for kind in spent.values())
    found = {}
    for kind, values in spent.items():
        if not values["ms"]:
            continue
        rate = values["gflop"] / (values["ms"] / 1e3) if values["gflop"] else None
        found[kind] = {
            "median": values["ms"],
            "unit": "ms (profiled)",
            "time_share": values["ms"] / layers.step_ms,
            "flop_share": values["gflop"] / counted if counted else None,
            "gflops": rate,
            "fraction_of_peak": rate / layers.peak_gflops if rate and layers.peak_gflops else None,
        }
    return found


def breakdown_figures(
    name: str, measure: str, layers: LayerProfile, model: nn.Module
) -> dict[str, dict[str, Any]]:
    """The :func:`kind_breakdown` of one profiled call, named by model, measure and kind."""
    return {
        f"{name} {measure}: {kind}": {**values, "model": name, "measure": measure, "kind": kind}
        for kind, values in kind_breakdown(layers, model).items()
    }


def profiled_breakdowns(
    steps: dict[str, Step],
    names: dict[str, tuple[str, str]],
    args: argparse.Namespace,
    setup: Setup,
    peak: dict | None,
) -> dict[str, dict[str, Any]]:
    """One more, profiled call of each step whose model has depthwise convolutions (a CPU, not
    compiled; layer tables in ``OUT/profiles/models/``), broken down by layer kind; ``names``
    gives each step's model and measure."""
    if setup.device.type != "cpu" or setup.compile:
        return {}
    chosen = {key: step for key, step in steps.items() if has_depthwise(step.model)}
    if not chosen:
        return {}
    folder = args.out / "profiles" / "models"
    profiles = profile_steps(chosen, setup, folder, peak_meter(args, setup, peak))
    found: dict[str, dict[str, Any]] = {}
    for key, layers in profiles.items():
        found.update(breakdown_figures(*names[key], layers, chosen[key].model))
    return found


def training_figures(
    specs: list[ModelSpec], args: argparse.Namespace, setup: Setup, peak: dict | None
) -> dict[str, dict[str, Any]]:
    """The training step of every model at every ``--sizes``, all taking turns with the peak
    GEMM; then the layer-kind breakdown of the models with depthwise convolutions."""
    steps: dict[str, ModelStep] = {}
    names: dict[str, tuple[str, str]] = {}
    for spec in specs:
        for size in args.sizes:
            key = f"{spec.name} step {size}"
            model = build(spec)
            steps[key] = ModelStep(model, spec.num_classes, spec.optim_cfg, setup, args.batch, size)
            names[key] = (spec.name, f"step {size}")
    seconds, peak_rates = with_peak(steps, args, setup, peak)
    found = {
        key: step_figure(
            seconds[key],
            args.batch,
            step.flops,
            peak_rates,
            layout=layout_note(step.layout),
            model=names[key][0],
            measure=names[key][1],
        )
        for key, step in steps.items()
    }
    return {**found, **profiled_breakdowns(steps, names, args, setup, peak)}


def inference_step(spec: ModelSpec, setup: Setup) -> Step:
    """Whole-image inference of ``spec``'s model (eval mode, in the layout chosen for it) as a
    step that carries its ``model``, ``images`` and ``layout``."""
    model = build(spec).eval().to(setup.device)
    layout = setup.layout(model, INFERENCE_SHAPE, training=False)
    images = setup.images(1, *INFERENCE_SIZE, layout)
    step = whole_image_step(setup.prepare(model, layout), images, setup)
    step.model, step.images, step.layout = model, images, layout
    return step


def memory_worker(spec: ModelSpec, args: argparse.Namespace) -> dict[str, float]:
    """In a fresh process: the peak memory of whole-image inference of one model (after its
    warm-up) and the resident peak before its first image."""
    setup = Setup(args)
    step = inference_step(spec, setup)
    before_mb = program_peak_resident_mb()
    return {"peak_mb": peak_after_warmup(step, setup, args.warmup), "before_mb": before_mb}


def timing_worker(
    specs: list[ModelSpec], args: argparse.Namespace, peak: dict | None
) -> dict[str, Any]:
    """In a fresh process: every model's whole-image inference taking turns (with the peak GEMM
    when measured), each model's parameters and forward FLOPs, and the layer-kind breakdown of
    those with depthwise convolutions."""
    setup = Setup(args)
    steps = {spec.name: inference_step(spec, setup) for spec in specs}
    flops = {name: forward_flops(step.model, step.images) for name, step in steps.items()}
    parameters = {
        name: sum(p.numel() for p in step.model.parameters()) for name, step in steps.items()
    }
    seconds, peak_rates = with_peak(steps, args, setup, peak)
    profiled = {f"{name} {INFERENCE}": step for name, step in steps.items()}
    names = {f"{name} {INFERENCE}": (name, INFERENCE) for name in steps}
    return {
        "seconds": seconds,
        "peak_rates": peak_rates,
        "flops": flops,
        "parameters": parameters,
        "layouts": {name: layout_note(step.layout) for name, step in steps.items()},
        "breakdowns": profiled_breakdowns(profiled, names, args, setup, peak),
    }


def inference_figures(
    specs: list[ModelSpec], args: argparse.Namespace, setup: Setup, peak: dict | None
) -> dict[str, dict[str, Any]]:
    """Images/s, GFLOPs, parameters and peak memory of every model's whole-image inference, and
    its speed as a multiple of :data:`BASELINE`'s (when chosen), repetition by repetition."""
    if setup.channels_last == "auto":  # probes here, so that no worker's peak holds one
        for spec in specs:
            setup.layout(build(spec).eval().to(setup.device), INFERENCE_SHAPE, training=False)
    memory = {spec.name: in_fresh_process(memory_worker, spec, args) for spec in specs}
    measured = in_fresh_process(timing_worker, specs, args, peak)
    seconds = measured["seconds"]
    unit = "MiB (GPU allocated)" if setup.device.type == "cuda" else "MiB (process resident)"
    found: dict[str, dict[str, Any]] = {}
    for spec in specs:
        name = spec.name
        found[f"{name} {INFERENCE}"] = step_figure(
            seconds[name],
            1,
            measured["flops"][name],
            measured["peak_rates"],
            layout=measured["layouts"][name],
            model=name,
            measure=INFERENCE,
            parameters_millions=measured["parameters"][name] / 1e6,
            peak_memory_mb=memory[name]["peak_mb"],
            memory_unit=unit,
            before_first_image_mb=memory[name]["before_mb"],
        )
        if BASELINE in seconds:
            ratios = throughput_ratios(seconds[name], seconds[BASELINE])
            measure = f"{INFERENCE} ÷ {BASELINE}"
            found[f"{name} {measure}"] = figure(ratios, "ratio", model=name, measure=measure)
    return {**found, **measured["breakdowns"]}


def measure_models(args: argparse.Namespace, setup: Setup, peak: dict | None) -> dict[str, Any]:
    """Every model of ``--models``: the training step, then inference (see the module
    docstring)."""
    specs = [model_spec(name) for name in args.models]
    return {
        **training_figures(specs, args, setup, peak),
        **inference_figures(specs, args, setup, peak),
    }


def models_table(figures: dict[str, dict[str, Any]]) -> str:
    """The part's figures as one row per model (parameters, GFLOPs, each training step, inference,
    the ratio to the baseline, peak memory, layout), then one row per layer kind of each
    profiled call."""
    rows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for item in figures.values():
        if "kind" not in item:
            rows[item["model"]][item["measure"]] = item
    steps = list(dict.fromkeys(m for row in rows.values() for m in row if m.startswith("step ")))
    ratio = f"{INFERENCE} ÷ {BASELINE}"
    header = ["model", "parameters (M)", f"GFLOP ({INFERENCE})"]
    header += [f"{step}: {what}" for step in steps for what in ("images/s", "of peak")]
    header += [f"{INFERENCE}: images/s", f"÷ {BASELINE}", "peak memory MiB (rise in inference)"]
    lines = [table_line([*header, "layout"]), "|" + "---|" * (len(header) + 1)]
    for model, row in rows.items():
        inference = row.get(INFERENCE, {})
        values = [inference.get("parameters_millions"), inference.get("gflop_per_step")]
        for step in steps:
            values += [row[step]["median"], row[step]["fraction_of_peak"]]
        values += [inference.get("median"), row.get(ratio, {}).get("median")]
        cells = [model, *map(format_number, values), memory_cell(inference)]
        cells.append(inference.get("layout", "–"))
        lines.append(table_line(cells))
    return "\n".join([*lines, "", kinds_table(figures)])


def memory_cell(inference: dict[str, Any]) -> str:
    """Peak memory of an inference figure and, in brackets, its rise over the peak before the
    first image (the model built): what inference itself adds."""
    peak, before = inference.get("peak_memory_mb"), inference.get("before_first_image_mb")
    if peak is None or before is None:
        return "–"
    return f"{peak:.0f} (+{peak - before:.0f})"


def kinds_table(figures: dict[str, dict[str, Any]]) -> str:
    """One row per layer kind of each profiled call: its share of the time and of the FLOPs,
    GFLOP/s and fraction of the GEMM peak."""
    columns = ("median", "time_share", "flop_share", "gflops", "fraction_of_peak")
    lines = [
        table_line(
            ["model", "measured", "layer kind", "ms (profiled)", "time share", "FLOP share"]
            + ["GFLOP/s", "of peak"]
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in figures.values():
        if "kind" in item:
            values = map(format_number, (item[key] for key in columns))
            lines.append(table_line([item["model"], item["measure"], item["kind"], *values]))
    return "\n".join(lines) if len(lines) > 2 else ""


def table_line(cells: list[str]) -> str:
    """One markdown table line."""
    return "| " + " | ".join(cells) + " |"

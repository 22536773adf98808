"""Reduced precision on the CPU: whole-image inference at 500×375 and ``parsenet-predict`` in
float32 (torch: the reference), float32 through ONNX Runtime, int8 (ONNX Runtime, statically
quantised) and bf16 (torch autocast: where the CPU has bf16 instructions, or emulated with
``PARSENET_EMULATE_BF16=1`` and marked so), for each checkpoint of ``--precision-checkpoints``
(default: a random-weight checkpoint of the benchmark's model).

Inference: every precision loaded as ``load_for_inference`` loads it, all taking turns in this
process (images/s, and the ratio to torch float32 formed repetition by repetition); peak resident
memory of each in a fresh process of its own; ONNX Runtime's own per-node profile of the float32
and int8 sessions (milliseconds per operator type, summed over the profiled runs). Predict: the
command on ``--predict-images`` VOC images per precision, taking turns, as the predict part.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from parsenet.engine.runtime import cpu_features
from parsenet.engine.scoring.inference import WHOLE_IMAGE
from parsenet.errors import ParsenetError
from parsenet.loading import InferenceModel, load_for_inference
from parsenet.onnx_backend import OnnxRuntimeModel

from .data import voc_pairs
from .inference import INFERENCE_SIZE, program_peak_resident_mb
from .predict import link_inputs, run_predict, seconds_per_image, write_checkpoint
from .settings import train_config
from .timing import Step, figure, rates, round_robin

# name → load_for_inference's backend and precision
VARIANTS = {
    "torch fp32": {"backend": "torch", "precision": "fp32"},
    "onnxruntime fp32": {"backend": "onnxruntime", "precision": "fp32"},
    "onnxruntime int8": {"backend": "onnxruntime", "precision": "int8"},
    "torch bf16": {"backend": "torch", "precision": "bf16"},
}
REFERENCE = "torch fp32"
PROFILED = ("onnxruntime fp32", "onnxruntime int8")
PROFILE_RUNS = 3
RANDOM = "random"  # in --precision-checkpoints: the benchmark's model with random weights


def load_variant(checkpoint: Path, name: str) -> InferenceModel:
    """``checkpoint`` loaded on the CPU in the variant ``name`` (NCHW for torch: the layout
    the export is traced in)."""
    return load_for_inference(checkpoint, "cpu", channels_last=False, **VARIANTS[name])


def whole_image(model: torch.nn.Module, images: torch.Tensor) -> Step:
    """Whole-image scores and their argmax, in inference mode, as ``parsenet-predict``."""

    @torch.inference_mode()
    def step() -> None:
        WHOLE_IMAGE.scores(model, images).argmax(dim=1)

    return step


def variant_peak(checkpoint: Path, name: str, images: torch.Tensor, warmup: int) -> float:
    """This process's peak resident MiB after loading ``name`` and ``warmup`` (≥ 1) runs."""
    step = whole_image(load_variant(checkpoint, name).model, images)
    for _ in range(max(warmup, 1)):
        step()
    return program_peak_resident_mb()


def onnxruntime_profile(path: Path, images: torch.Tensor, prefix: Path) -> dict[str, Any]:
    """ONNX Runtime's own profile of :data:`PROFILE_RUNS` runs of ``path`` on ``images`` as a
    report row: milliseconds per run in all nodes, per operator type (descending) and in each of
    the five slowest nodes. The trace is written at ``prefix`` and removed."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images.numpy()}
    session.run(None, feed)  # the first run allocates
    for _ in range(PROFILE_RUNS):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    runs = sorted(event["ts"] + event["dur"] for event in events if event["name"] == "model_run")
    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    for event in events:
        arguments = event.get("args", {})
        if event.get("cat") != "Node" or "op_name" not in arguments or event["ts"] < runs[0]:
            continue  # not a node, or in the first run (allocations)
        milliseconds = event["dur"] / 1000 / PROFILE_RUNS
        by_type[arguments["op_name"]] += milliseconds
        node = event["name"].removesuffix("_kernel_time")
        by_node[f"{node} ({arguments['op_name']})"] += milliseconds
    trace.unlink()
    ordered = dict(sorted(by_type.items(), key=lambda item: -item[1]))
    slowest = sorted(by_node.items(), key=lambda item: -item[1])[:5]
    return {
        "median": sum(ordered.values()),
        "unit": "ms in nodes",
        **{f"op {name}": value for name, value in ordered.items()},
        **{f"node {name}": value for name, value in slowest},
    }


def available_variants(checkpoint: Path) -> tuple[dict[str, InferenceModel], dict[str, str]]:
    """Every variant that loads here, and the one-line refusal of each that does not."""
    loaded, refused = {}, {}
    for name in VARIANTS:
        try:
            loaded[name] = load_variant(checkpoint, name)
        except ParsenetError as error:
            refused[name] = str(error)
    return loaded, refused


def checkpoint_label(checkpoint: Path) -> str:
    """A run's experiment name for ``<run>/checkpoints/<name>.pt``, else the file's stem."""
    parts = checkpoint.parts
    return checkpoint.parents[2].name if parts[-2:-1] == ("checkpoints",) else checkpoint.stem


def measure_checkpoint(checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Inference, predict and profile rows of every variant of one checkpoint (and a row for
    each variant refused here, with its one line)."""
    label = checkpoint_label(checkpoint)
    loaded, refused = available_variants(checkpoint)
    images = torch.randn(1, 3, *INFERENCE_SIZE, generator=torch.Generator().manual_seed(0))
    steps = {name: whole_image(model.model, images) for name, model in loaded.items()}
    seconds = round_robin(steps, torch.device("cpu"), args.warmup, args.repetitions)
    context = multiprocessing.get_context("spawn")
    rows: dict[str, Any] = {}
    height, width = INFERENCE_SIZE
    for name in loaded:
        with context.Pool(1) as pool:
            peak = pool.apply(variant_peak, (checkpoint, name, images, args.warmup))
        ratios = [base / ours for base, ours in zip(seconds[REFERENCE], seconds[name], strict=True)]
        rows[f"{label} {name}: whole image {width}×{height}"] = figure(
            rates(1, seconds[name]),
            "images/s",
            ratio_to_torch_fp32=statistics.median(ratios),
            peak_resident_mb=peak,
        )
    rows |= measure_predict_precisions(checkpoint, label, list(loaded), args)
    for name in PROFILED:
        if name in loaded and isinstance(loaded[name].model, OnnxRuntimeModel):
            prefix = args.out / "precision" / f"{label}-{name.replace(' ', '_')}"
            profile = onnxruntime_profile(loaded[name].model.path, images, prefix)
            rows[f"{label} {name}: ONNX Runtime profile per run"] = profile
    for name, line in refused.items():
        rows[f"{label} {name}: refused"] = {"median": None, "unit": "", "why": line}
    return rows


def measure_predict_precisions(
    checkpoint: Path, label: str, names: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """``parsenet-predict`` of each variant on ``--predict-images`` VOC images, one untimed
    command each first (which fills the cache: layout verdict, exports, calibration), then the
    variants taking turns: per-image latency (and its speed ratio to torch float32)."""
    folder = args.out / "precision" / label
    images = [image for image, _ in voc_pairs(args.voc, "val", args.predict_images)]
    inputs = link_inputs(images, folder / "inputs")
    slug = {name: name.replace(" ", "_") for name in names}

    def run(name: str, run_dir: Path) -> float:
        variant = VARIANTS[name]
        precision = f"precision={variant['precision']}"
        return run_predict(checkpoint, inputs, run_dir, args, variant["backend"], precision)

    for name in names:
        run(name, folder / "runs" / f"first_{slug[name]}")
    latency: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(args.repetitions):
        for name in names:
            run_dir = folder / "runs" / f"{slug[name]}_{repetition}"
            run(name, run_dir)
            latency[name].append(seconds_per_image(run_dir))
    rows = {}
    for name in names:
        ratios = [base / ours for base, ours in zip(latency[REFERENCE], latency[name], strict=True)]
        rows[f"{label} {name}: parsenet-predict per image"] = figure(
            latency[name], "s", speed_ratio_to_torch_fp32=statistics.median(ratios)
        )
    return rows


def random_checkpoint(args: argparse.Namespace) -> Path:
    """A checkpoint of the benchmark's model with random weights, named after the model."""
    cfg = train_config(args)
    return write_checkpoint(cfg, args.out / "precision" / f"{cfg['model']['name']}-random.pt")


def measure_precision(args: argparse.Namespace) -> dict[str, Any]:
    """Every checkpoint of ``--precision-checkpoints`` (``random``: a random-weight one of the
    benchmark's model, the default) in every precision that runs here, after a row of what
    this CPU has."""
    checkpoints = [
        random_checkpoint(args) if str(checkpoint) == RANDOM else Path(checkpoint)
        for checkpoint in args.precision_checkpoints or [RANDOM]
    ]
    rows: dict[str, Any] = {
        "CPU instructions": {
            "median": None,
            "unit": "",
            "bf16": cpu_features.has_bf16(),
            "bf16_emulated": not cpu_features.has_bf16() and cpu_features.bf16_emulation_forced(),
            "vnni": cpu_features.has_vnni(),
        }
    }
    for checkpoint in checkpoints:
        rows |= measure_checkpoint(checkpoint, args)
    return rows

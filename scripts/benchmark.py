"""Measure training and inference against the machine's own limit and a plain reference loop.

    python scripts/benchmark.py                                   # everything, CPU, float32
    python scripts/benchmark.py --device cuda --compile           # GPU: bf16 autocast
    python scripts/benchmark.py --parts peak,step --sizes 320 --batch 4
    python scripts/benchmark.py --parts peak,step,inference --compare-layouts   # NCHW vs NHWC
    python scripts/benchmark.py --parts peak,models --sizes 320 --channels-last   # every model

Every part measures what users get by default: the memory layout ``channels_last=auto`` chooses
(the same probe and cache, :mod:`parsenet.engine.runtime.memory_format`) unless
``--channels-last`` or
``--no-channels-last`` forces one; ``--compare-layouts`` adds the model step and inference in
each forced layout, taking turns with the default.

Parts (``--parts``, all but ``precision`` and ``models`` by default):

- ``peak``: the dense matmul rate of the machine, through both GEMM engines torch has (its BLAS
  behind ``torch.mm`` and, as a 1×1 convolution, the convolution library); the better one is the
  peak. Float32 (strict, no TF32) everywhere, and bfloat16 on a GPU.
- ``step``: forward + backward + SGD step of the model on tensors already in memory, per size in
  ``--sizes``; images/s and FLOP/s (counted by :mod:`parsenet.models.flops`) as a fraction of the
  peak GEMM's rate measured alongside (the peak's engine takes a turn between the steps).
- ``e2e``: the real :class:`~parsenet.engine.training.trainer.Trainer` — its loader (workers, seeded
  sampler) and its ``train_step`` (precision, gradient norm, non-finite guard, schedule) — on
  decoded images (``--data``, CamVid by default); ``run()``'s logging, evaluations and
  checkpoints are outside the timed steps.
- ``reference``: a plain loop in torchvision-reference style (DataLoader, model, SGD,
  cross-entropy) on the same data and model.
- ``data``: one loader worker's images/s for the VOC train pipeline (scale, pad, crop, flip to
  each of ``--crops``) and the eval pipeline, decoding with Pillow and with OpenCV.
- ``inference``: whole-image inference at 500×375 (inference mode, batch 1) in a fresh process:
  images/s, peak memory; through ONNX Runtime too where ``--backends`` has it (CPU).
- ``predict``: ``parsenet-predict`` on ``--predict-images`` VOC images: wall time, per-image
  latency (the spacing of its output files) and start-up, per backend of ``--backends``.
- ``scaling``: step time vs input size and vs batch size.
- ``precision`` (on request): whole-image inference at 500×375 and ``parsenet-predict`` in float32
  (torch and ONNX Runtime), int8 (ONNX Runtime, statically quantised) and bf16 (torch autocast,
  where the CPU has bf16 instructions or ``PARSENET_EMULATE_BF16=1``) for each checkpoint of
  ``--precision-checkpoints`` (``random``, the default: the model with random weights):
  images/s and the ratio to torch float32 timed beside it, peak memory, and ONNX Runtime's
  per-node profile of float32 and int8.
- ``models``: what each model of ``--models`` costs (experiments, and torchvision's own models as
  ``torchvision:<builder>``; by default every trunk with its heads and three torchvision
  references): parameters, forward GFLOPs at 500×375, the model step per size in ``--sizes``
  (images/s, fraction of the peak), whole-image inference at 500×375 (images/s, all models
  taking turns in one fresh process, and as a multiple of torchvision's LR-ASPP; peak memory,
  each model in a fresh process of its own), and for models with depthwise convolutions the
  time, FLOPs and rate of each layer kind (depthwise, dense convolutions, the rest) from one
  profiled step and inference, against the GEMM peak.

The training parts (``step``, ``e2e``, ``reference``) run interleaved, one step of each in turn,
so a load change on a shared machine hits them alike; their ratios are taken repetition by
repetition. ``--profile`` adds one profiled step of each, and one profiled inference
(``OUT/profiles/``: the operators, and on a CPU each layer's forward and backward time against
the GEMM peak). Every figure is
the median of ``--repetitions`` timed repetitions after ``--warmup`` untimed ones, and the raw
repetitions are kept. ``OUT/benchmark.json`` holds everything (with versions, machine, threads,
load and command line); ``OUT/benchmark.md`` the tables.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarking.data import measure_data
from benchmarking.inference import measure_inference
from benchmarking.models import DEFAULT_MODELS, measure_models, models_table, unknown_models
from benchmarking.peak import measure_peak
from benchmarking.precision import measure_precision
from benchmarking.predict import measure_predict
from benchmarking.report import environment, write_report
from benchmarking.scaling import measure_scaling
from benchmarking.settings import REPO, Setup
from benchmarking.training import measure_training

PARTS = (
    "peak",
    "step",
    "e2e",
    "reference",
    "data",
    "inference",
    "predict",
    "scaling",
    "precision",
    "models",
)
# on request: models builds and times every model of --models; precision exports, calibrates
# and runs predict commands per precision
ON_REQUEST = ("precision", "models")
DEFAULT_PARTS = tuple(part for part in PARTS if part not in ON_REQUEST)
TRAINING_PARTS = ("step", "e2e", "reference")
# as configs/data/voc.yaml: $PARSENET_VOC, else the data root
DEFAULT_VOC = os.environ.get("PARSENET_VOC", os.environ.get("PARSENET_DATA_ROOT", "data"))


def default_backends() -> list[str]:
    """torch, and onnxruntime where it (and the ONNX exporter's onnxscript) is installed."""
    installed = all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnxscript"))
    return ["torch", "onnxruntime"] if installed else ["torch"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""

    def numbers(text: str) -> list[int]:
        return [int(value) for value in text.split(",") if value]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help="comma-separated, of: " + ",".join(PARTS) + " (default: all but precision, models)",
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
        default="auto",
        help="force NHWC (or NCHW with --no-channels-last); default: auto, as users get it",
    )
    parser.add_argument(
        "--compare-layouts",
        action="store_true",
        help="also time the model step and inference in each forced layout, taking turns",
    )
    parser.add_argument(
        "--backends",
        type=lambda text: [name for name in text.split(",") if name],
        default=default_backends(),
        help="inference/predict backends, of torch,onnxruntime (default: those installed)",
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
        "--models",
        type=lambda text: [name for name in text.split(",") if name],
        default=list(DEFAULT_MODELS),
        help="models part: experiment names and torchvision:<segmentation builder>",
    )
    parser.add_argument(
        "--precision-checkpoints",
        type=lambda text: [Path(name) for name in text.split(",") if name],
        default=[],
        help="precision part: checkpoints, and 'random' for the model with random weights "
        "(the default)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default runs/benchmark/<time>)"
    )
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    if args.amp == "auto":
        args.amp = "bf16" if on_gpu else "off"
    args.peak_size = args.peak_size or (8192 if on_gpu else 4096)
    args.out = args.out or REPO / "runs" / "benchmark" / datetime.now().strftime(
        "%Y-%m-%d_%H-%M-%S"
    )
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    if args.peak_size % 64:
        parser.error("--peak-size must be a multiple of 64")
    if set(args.backends) - {"torch", "onnxruntime"} or "torch" not in args.backends:
        parser.error("--backends must name torch, and may add onnxruntime")
    unknown_names = unknown_models(args.models)
    if unknown_names:
        parser.error(
            f"unknown models {unknown_names}: name experiments (configs/experiment/) or "
            "torchvision:<builder> of torchvision.models.segmentation"
        )
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
        "training": lambda: measure_training(args, setup, results.get("peak")),
        "data": lambda: measure_data(args),
        "inference": lambda: measure_inference(args, results.get("peak")),
        "predict": lambda: measure_predict(args),
        "scaling": lambda: measure_scaling(args, setup, results.get("peak")),
        "precision": lambda: measure_precision(args),
        "models": lambda: measure_models(args, setup, results.get("peak")),
    }
    chosen = {*parts, "training"} if set(parts) & set(TRAINING_PARTS) else set(parts)
    for name, measure in measurements.items():
        if name in chosen:
            before = os.getloadavg()[0]
            print(f"measuring {name} (load average {before:.2f})", flush=True)
            results[name] = measure()
            loads[name] = [before, os.getloadavg()[0]]
    write_report(report, args.out, {"models": models_table})
    return report


if __name__ == "__main__":
    main()

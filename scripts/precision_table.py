"""What reduced precision costs, per class: float32 vs bf16 vs int8 on a checkpoint's val split.

For each checkpoint, every validation image (of the data the checkpoint was trained on, or
``--data-root``) goes through float32 (torch, the reference), bf16 (torch autocast; where this
CPU has no bf16 instructions only with ``PARSENET_EMULATE_BF16=1``, and marked emulated) and
int8 (ONNX Runtime, statically quantised, calibrated on ``--calibration-images`` training
images). Each precision's predictions are counted by the scorer ``parsenet-eval`` uses (the
confusion matrix and the context statistics of :mod:`parsenet.metrics`): mIoU, per-class IoU,
the out-of-context fraction, and the share of pixels whose label equals float32's. Writes
``precision.md`` (the tables) and ``precision.json`` (every figure, the machine, the load) into
``--out``.

    python scripts/precision_table.py CHECKPOINT [CHECKPOINT ...] --out runs/precision
    PARSENET_EMULATE_BF16=1 python scripts/precision_table.py …   # bf16 labels on any CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from parsenet.data import build_dataset
from parsenet.data.transforms import eval_transform
from parsenet.engine.runtime import cpu_features
from parsenet.engine.scoring.inference import WHOLE_IMAGE
from parsenet.errors import ParsenetError
from parsenet.fileio import atomic_write
from parsenet.loading import InferenceModel, load_for_inference
from parsenet.metrics import ConfusionMatrix, ContextStatistics

# precision → how load_for_inference runs it
PRECISIONS = {
    "fp32": {"backend": "torch", "precision": "fp32"},
    "bf16": {"backend": "torch", "precision": "bf16"},
    "int8": {"backend": "onnxruntime", "precision": "int8"},
}


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor()


def load_precisions(
    checkpoint: Path, names: list[str], data: dict[str, Any], calibration: int
) -> tuple[dict[str, InferenceModel], dict[str, str]]:
    """The checkpoint loaded in each precision of ``names`` that runs here, and a note for each
    that does not (a refusal's one line)."""
    loaded, refused = {}, {}
    for name in names:
        try:
            loaded[name] = load_for_inference(
                checkpoint,
                "cpu",
                data=data,
                channels_last=False,
                calibration={"images": calibration},
                **PRECISIONS[name],
            )
        except ParsenetError as error:
            refused[name] = str(error)
    return loaded, refused


def measure(
    loaded: dict[str, InferenceModel], limit: int | None, tick: Callable[[int, int], None]
) -> dict[str, Any]:
    """Score every precision on the val split (the first ``limit`` images): per precision the
    scores, the pixels agreeing with float32 and the seconds spent in its model."""
    reference = loaded["fp32"]
    data = reference.data_config
    dataset = build_dataset(data, data["val_split"], eval_transform(reference.normalization))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    k, ignore = reference.num_classes, reference.ignore_index
    matrices = {name: ConfusionMatrix(k, ignore) for name in loaded}
    contexts = {name: ContextStatistics(k, ignore) for name in loaded}
    agree = dict.fromkeys(loaded, 0)
    seconds = dict.fromkeys(loaded, 0.0)
    pixels = 0
    with torch.inference_mode():
        for index in range(count):
            sample = dataset[index]
            image, label = sample["image"].unsqueeze(0), sample["label"].unsqueeze(0)
            labels = {}
            for name, model in loaded.items():
                started = time.perf_counter()
                labels[name] = WHOLE_IMAGE.scores(model.model, image).argmax(dim=1)
                seconds[name] += time.perf_counter() - started
                matrices[name].update(labels[name], label)
                contexts[name].update(labels[name], label)
            for name in loaded:
                agree[name] += int((labels[name] == labels["fp32"]).sum())
            pixels += label.numel()
            tick(index + 1, count)
    names = reference.class_names
    return {
        "dataset": data["name"],
        "split": data["val_split"],
        "images": count,
        "class_names": list(names),
        "precisions": {
            name: {
                **matrices[name].compute(names),
                **contexts[name].compute(),
                "agreement_with_fp32": agree[name] / pixels,
                "seconds_per_image": seconds[name] / count,
            }
            for name in loaded
        },
    }


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals (— for none)."""
    return "—" if value is None else f"{100 * value:.2f}"


def markdown(results: list[dict[str, Any]], about: dict[str, Any]) -> str:
    """The summary table and one per-class table per checkpoint."""
    notes = []
    if "int8" in about["precisions"]:
        weights = "" if about["vnni"] else ", 7-bit weights (reduce_range: no VNNI here)"
        notes.append(f"int8 calibrated on {about['calibration_images']} training images{weights}")
    if "bf16" in about["precisions"] and not about["bf16_instructions"]:
        notes.append("bf16 emulated (no bf16 instructions here)")
    lines = [
        f"Measured on {about['cpu']} ({about['cores']} cores, {about['torch_threads']} "
        f"thread(s)), load average {about['load_before']:.2f} → {about['load_after']:.2f}"
        f"{''.join('; ' + note for note in notes)}. s/image: this run's whole-image time, for "
        "ratios within one checkpoint only.",
        "",
        "| checkpoint | data | precision | mIoU | Δ mIoU | pixels = fp32 | out of context | "
        "s/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        base = result["precisions"]["fp32"]["mIoU"]
        where = f"{result['dataset']} {result['split']} ({result['images']})"
        for name, scores in result["precisions"].items():
            lines.append(
                f"| {result['name']} | {where} | {name} | {percent(scores['mIoU'])} | "
                f"{100 * (scores['mIoU'] - base):+.2f} | "
                f"{percent(scores['agreement_with_fp32'])} | "
                f"{percent(scores['out_of_context'])} | {scores['seconds_per_image']:.3f} |"
            )
        for name, line in result["refused"].items():
            lines.append(f"| {result['name']} | {where} | {name} | refused: {line} ||||| ")
    for result in results:
        names = list(result["precisions"])
        lines += [
            "",
            f"Per-class IoU (%), {result['name']} on {result['dataset']} {result['split']}:",
            "",
            "| class | "
            + " | ".join(names)
            + " | "
            + " | ".join(f"Δ {n}" for n in names[1:])
            + " |",
            "|---|" + "---|" * (2 * len(names) - 1),
        ]
        for cls in result["class_names"]:
            ious = [result["precisions"][name]["per_class_iou"][cls] for name in names]
            deltas = [
                "—" if iou is None or ious[0] is None else f"{100 * (iou - ious[0]):+.2f}"
                for iou in ious[1:]
            ]
            lines.append(f"| {cls} | {' | '.join(map(percent, ious))} | {' | '.join(deltas)} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the tables")
    parser.add_argument(
        "--precisions", default="fp32,bf16,int8", help="comma-separated, of fp32,bf16,int8"
    )
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--data-root", help="the checkpoint's dataset, read from here")
    parser.add_argument("--limit", type=int, help="only the first N val images")
    parser.add_argument(
        "--names", help="comma-separated table names of the checkpoints (default: paths)"
    )
    args = parser.parse_args(argv)
    args.precisions = [name for name in args.precisions.split(",") if name]
    if args.precisions[:1] != ["fp32"] or set(args.precisions) - set(PRECISIONS):
        parser.error("--precisions must start with fp32 and name only fp32, bf16, int8")
    args.names = args.names.split(",") if args.names else [str(p) for p in args.checkpoints]
    if len(args.names) != len(args.checkpoints):
        parser.error("--names must name every checkpoint")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure every checkpoint; write precision.md and precision.json into ``--out``."""
    args = parse_args(argv)
    data = {"root": args.data_root} if args.data_root else None
    about = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16_instructions": cpu_features.has_bf16(),
        "vnni": cpu_features.has_vnni(),
        "calibration_images": args.calibration_images,
        "precisions": args.precisions,
        "load_before": os.getloadavg()[0],
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    results = []
    try:
        for name, checkpoint in zip(args.names, args.checkpoints, strict=True):
            loaded, refused = load_precisions(
                checkpoint, args.precisions, data, args.calibration_images
            )
            if "fp32" not in loaded:
                raise ParsenetError(refused["fp32"])

            def tick(done: int, total: int, name: str = name) -> None:
                print(f"\r{name}: {done}/{total}", end="", file=sys.stderr, flush=True)

            result = measure(loaded, args.limit, tick)
            print(file=sys.stderr)
            results.append(
                {"name": name, "checkpoint": str(checkpoint), "refused": refused, **result}
            )
    except ParsenetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    about["load_after"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, about)
    record = json.dumps({"about": about, "results": results}, indent=1)
    atomic_write(args.out / "precision.md", lambda handle: handle.write(table.encode()))
    atomic_write(args.out / "precision.json", lambda handle: handle.write(record.encode()))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

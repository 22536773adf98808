"""The built-in demo: train ParseNet and the FCN baseline on the synthetic data, compare them.

Runs ``parsenet-train experiment=demo`` once per model (the real CLI), then prints both models'
per-class IoU side by side. Everything lands in ``runs/demo/<time>/``: one run folder per model
(checkpoints, metrics.json, TensorBoard logs, overlays) and ``summary.json``.

    python scripts/demo.py [--out DIR] [HYDRA_OVERRIDE ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from parsenet.report import scores_table, write_json

MODELS = (("ParseNet", "parsenet"), ("FCN", "fcn"))


def main() -> int:
    """Train and evaluate both models; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder (default runs/demo/<time>)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = parser.parse_args()
    out = args.out or Path("runs/demo") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    results, seconds = {}, {}
    for title, model in MODELS:
        print(f"\n=== training {title} (model={model}) ===", flush=True)
        started = time.perf_counter()
        command = [
            sys.executable,
            "-m",
            "parsenet.cli.train",
            "experiment=demo",
            f"model={model}",
            f"hydra.run.dir={out / model}",
            *args.overrides,
        ]
        status = subprocess.run(command).returncode
        if status != 0:
            return status
        seconds[title] = time.perf_counter() - started
        results[title] = json.loads((out / model / "metrics.json").read_text())
    dataset, split = results["ParseNet"]["dataset"], results["ParseNet"]["split"]
    print(f"\n=== ParseNet vs FCN on the {dataset} {split} split (IoU %, whole-image) ===")
    print(scores_table(results, list(results["ParseNet"]["per_class_iou"])))
    print(
        "\n"
        + ", ".join(f"{title}: {s:.0f} s" for title, s in seconds.items())
        + f" (train + eval); total {sum(seconds.values()):.0f} s"
    )
    write_json(out / "summary.json", {"metrics": results, "seconds": seconds})
    print(
        f"run folders: {out / 'parsenet'}, {out / 'fcn'}  (TensorBoard: tensorboard --logdir {out})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``parsenet-train``: train a model as ``configs/train.yaml`` (plus overrides) describes.

Under ``torchrun`` every process runs this; rank 0's run folder is used by all of them.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from parsenet.cli.common import hydra_command, quoted, share_run_dir
from parsenet.data import dataset_info
from parsenet.engine.runtime.distributed import init_distributed, shutdown
from parsenet.engine.training.settings import TrainSettings
from parsenet.report import bad_samples_note, scores_table
from parsenet.training import train


@hydra_command("train", check=TrainSettings.from_config)
def main(cfg: dict[str, Any], run_dir: Path) -> None:
    """Train, evaluate on the validation split, print the per-class table."""
    context = init_distributed(cfg["device"])
    run_dir = share_run_dir(run_dir, context)
    record = train(cfg, run_dir, context)
    shutdown(context)
    if not context.is_main:
        return
    if "stopped" in record:
        replaced = ("hydra.run.dir=", "train.resume=")
        kept = [arg for arg in sys.argv[1:] if not arg.startswith(replaced)]
        resume = [*kept, "train.resume=auto", f"hydra.run.dir={quoted(str(run_dir))}"]
        print(
            f"stopped by {record['stopped']} at iteration {record['iteration']}; "
            f"{record['checkpoint']} holds the state. Resume with:\n"
            f"  parsenet-train {shlex.join(resume)}"
        )
        return
    info = dataset_info(cfg["data"])
    print(scores_table({cfg["model"]["name"]: record}, info.class_names))
    print(f"mode: {record['mode']}, split: {record['split']}, images: {record['num_images']}")
    if note := bad_samples_note(record):
        print(note)
    print(f"run folder: {run_dir}")


if __name__ == "__main__":
    main()

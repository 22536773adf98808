"""``parsenet-train``: train a model as ``configs/train.yaml`` (plus overrides) describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parsenet.cli.common import hydra_command
from parsenet.data import dataset_info
from parsenet.engine.trainer import Trainer
from parsenet.report import scores_table


@hydra_command("train")
def main(cfg: dict[str, Any], run_dir: Path) -> None:
    """Train, evaluate on the validation split, print the per-class table."""
    record = Trainer(cfg, run_dir).run()
    info = dataset_info(cfg["data"]["name"])
    print(scores_table({cfg["model"]["name"]: record}, info.class_names))
    print(f"mode: {record['mode']}, split: {record['split']}, images: {record['num_images']}")
    print(f"run folder: {run_dir}")


if __name__ == "__main__":
    main()

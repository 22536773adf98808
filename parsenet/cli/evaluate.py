"""``parsenet-eval checkpoint=PATH``: score a checkpoint on a split and write ``metrics.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parsenet.cli.common import hydra_command
from parsenet.data import build_dataset, dataset_info
from parsenet.data.loader import make_loader
from parsenet.data.normalization import get_normalization
from parsenet.data.transforms import eval_transform
from parsenet.engine.checkpoint import load_checkpoint, restore_model
from parsenet.engine.evaluator import evaluate
from parsenet.engine.runtime import resolve_device
from parsenet.models.pretrained import choose_input_norm
from parsenet.report import metrics_record, scores_table, write_json


def with_overrides(chosen: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """``chosen`` when it names its own config (``name`` set), else ``trained`` with the
    non-null values of ``chosen`` laid over it (nested nodes merged key by key)."""
    if chosen.get("name") is not None:
        return chosen
    return _lay_over(trained, chosen)


def _lay_over(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _lay_over(base[key], value)
        elif value is not None and value != {}:
            merged[key] = value
    return merged


@hydra_command("eval")
def main(cfg: dict[str, Any], run_dir: Path) -> None:
    """Evaluate a checkpoint (whole-image inference) and print the per-class table."""
    path = Path(cfg["checkpoint"])
    checkpoint = load_checkpoint(path)
    data_cfg = with_overrides(cfg["data"], checkpoint["config"]["data"])
    model_cfg = with_overrides(cfg["model"], checkpoint["config"]["model"])
    info = dataset_info(data_cfg["name"])
    device = resolve_device(cfg["device"])
    model = restore_model(checkpoint, path, model_cfg, info.num_classes).to(device)
    split = cfg["split"] or data_cfg["val_split"]
    trained_norm = checkpoint["config"]["model"]["input_norm"]
    input_norm = choose_input_norm(model_cfg.get("input_norm"), trained_norm)
    dataset = build_dataset(data_cfg, split, eval_transform(get_normalization(input_norm)))
    loader = make_loader(
        dataset, 1, data_cfg["num_workers"], shuffle=False, pin_memory=device.type == "cuda"
    )
    scores = evaluate(
        model, loader, info.num_classes, device, info.ignore_index, progress=True
    ).compute(info.class_names)
    record = metrics_record(
        scores,
        num_images=len(dataset),
        mode="whole",
        checkpoint=str(path),
        dataset=info.name,
        split=split,
    )
    write_json(run_dir / "metrics.json", record)
    print(scores_table({model_cfg["name"]: record}, info.class_names))
    print(f"mode: whole, dataset: {info.name}, split: {split}, images: {len(dataset)}")
    print(f"metrics: {run_dir / 'metrics.json'}")


if __name__ == "__main__":
    main()

"""``parsenet-eval``: score a checkpoint (or a folder of predictions) on a split.

Writes ``metrics.json``, ``confusion.npy`` and ``confusion.png`` into the run folder and prints
the per-class table. Under ``torchrun`` the images are split between the processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from parsenet.cli.common import hydra_command, share_run_dir
from parsenet.data import build_dataset, dataset_info
from parsenet.data.bad_samples import BadSampleLog
from parsenet.data.loader import make_loader
from parsenet.data.normalization import get_normalization
from parsenet.data.transforms import eval_transform
from parsenet.engine.checkpoint import load_checkpoint, restore_model
from parsenet.engine.distributed import (
    DistContext,
    init_distributed,
    main_process_first,
    shard_indices,
    shutdown,
)
from parsenet.engine.evaluator import evaluate, gather_bad_samples, shard
from parsenet.engine.inference import InferenceMode
from parsenet.engine.scoring import score_prediction_folder
from parsenet.errors import ConfigError
from parsenet.fileio import atomic_write
from parsenet.metrics import ConfusionMatrix
from parsenet.models.pretrained import choose_input_norm
from parsenet.report import bad_samples_note, class_table, metrics_record, write_json
from parsenet.visualize import confusion_image, save_png


def with_overrides(chosen: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """``chosen`` when it names its own config (``name`` set), else ``trained`` with the
    non-null values of ``chosen`` laid over it (nested nodes merged key by key)."""
    if chosen.get("name") is not None:
        return chosen
    return _lay_over(trained, chosen)


def moved_data(trained: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's data config with the command line's values, where a class file that sat
    in the training root (``classes.yaml`` of ``data=folder``) moves with a new ``data.root``."""
    merged = with_overrides(chosen, trained)
    classes, root = trained.get("classes"), trained.get("root")
    moved = chosen.get("name") is None and chosen.get("root") and not chosen.get("classes")
    if moved and classes and root and Path(classes).parent == Path(root):
        merged["classes"] = str(Path(chosen["root"]) / Path(classes).name)
    return merged


def _lay_over(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _lay_over(base[key], value)
        elif value is not None and value != {}:
            merged[key] = value
    return merged


def evaluate_checkpoint(
    cfg: dict[str, Any], context: DistContext
) -> tuple[ConfusionMatrix, dict[str, Any], dict[str, Any]]:
    """Run the checkpoint's model over the split; returns the confusion matrix, the data config
    and what to record about the run."""
    path = Path(cfg["checkpoint"])
    checkpoint = load_checkpoint(path)
    data_cfg = moved_data(checkpoint["config"]["data"], cfg["data"])
    model_cfg = with_overrides(cfg["model"], checkpoint["config"]["model"])
    info = dataset_info(data_cfg)
    mode = InferenceMode.from_config(cfg)
    model = restore_model(checkpoint, path, model_cfg, info.num_classes).to(context.device)
    split = cfg["split"] or data_cfg["val_split"]
    trained_norm = checkpoint["config"]["model"]["input_norm"]
    input_norm = choose_input_norm(model_cfg.get("input_norm"), trained_norm)
    with main_process_first(context):
        dataset = build_dataset(data_cfg, split, eval_transform(get_normalization(input_norm)))
    bad_samples = BadSampleLog()
    loader = make_loader(
        shard(dataset, context),
        1,
        data_cfg["num_workers"],
        pin_memory=context.device.type == "cuda",
    )
    confusion = evaluate(
        model,
        loader,
        info.num_classes,
        context.device,
        info.ignore_index,
        progress=context.is_main,
        context=context,
        mode=mode,
        bad_samples=bad_samples,
    )
    about = {"source": str(path), "name": model_cfg["name"], "split": split, "count": len(dataset)}
    if data_cfg.get("on_bad_sample") == "skip":
        about["bad_samples"] = gather_bad_samples(bad_samples, context).summary()
        about["count"] -= about["bad_samples"]["skipped"]  # the images actually scored
    return confusion, data_cfg, {**about, "inference": mode.describe()}


def score_predictions(
    cfg: dict[str, Any], context: DistContext
) -> tuple[ConfusionMatrix, dict[str, Any], dict[str, Any]]:
    """Score ``predictions/<id>.png`` against the chosen data's split."""
    data_cfg = cfg["data"]
    if data_cfg.get("name") is None:
        raise ConfigError("predictions=DIR needs the data to score against: add data=NAME")
    split = cfg["split"] or data_cfg["val_split"]
    dataset = build_dataset(data_cfg, split)
    share = shard_indices(len(dataset), context)
    confusion = score_prediction_folder(
        dataset, cfg["predictions"], share, context, progress=context.is_main
    )
    about = {"source": str(cfg["predictions"]), "name": "predictions", "split": split}
    return (
        confusion,
        data_cfg,
        {**about, "count": len(dataset), "inference": {"mode": "predictions"}},
    )


@hydra_command("eval")
def main(cfg: dict[str, Any], run_dir: Path) -> None:
    """Evaluate, then write metrics.json, confusion.npy, confusion.png and print the table."""
    if (cfg["checkpoint"] is None) == (cfg["predictions"] is None):
        raise ConfigError("pass checkpoint=PATH, or predictions=DIR with data=NAME (one of them)")
    context = init_distributed(cfg["device"])
    run_dir = share_run_dir(run_dir, context)
    task = evaluate_checkpoint if cfg["checkpoint"] is not None else score_predictions
    confusion, data_cfg, about = task(cfg, context)
    shutdown(context)
    if not context.is_main:
        return
    info = dataset_info(data_cfg)
    scores = confusion.compute(info.class_names)
    inference = about["inference"]
    record = metrics_record(
        scores,
        num_images=about["count"],
        mode=inference["mode"],
        checkpoint=about["source"],
        dataset=info.name,
        split=about["split"],
        inference=inference,
    )
    if "bad_samples" in about:
        record["bad_samples"] = about["bad_samples"]
    write_json(run_dir / "metrics.json", record)
    matrix = confusion.matrix.cpu().numpy()
    atomic_write(run_dir / "confusion.npy", lambda handle: np.save(handle, matrix))
    save_png(confusion_image(matrix, info.class_names), run_dir / "confusion.png")
    print(class_table(scores, info.class_names))
    settings = ", ".join(f"{key} {value}" for key, value in inference.items() if key != "mode")
    print(
        f"{about['name']}: mode {inference['mode']}{f' ({settings})' if settings else ''}, "
        f"dataset {info.name}, split {about['split']}, images {about['count']}"
    )
    if note := bad_samples_note(record):
        print(note)
    print(f"metrics: {run_dir / 'metrics.json'}  confusion: {run_dir / 'confusion.png'}")


if __name__ == "__main__":
    main()

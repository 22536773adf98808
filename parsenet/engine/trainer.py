"""The iteration-based training loop: poly learning-rate decay, evaluation, checkpoints."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from parsenet.data import build_dataset, dataset_info
from parsenet.data.loader import infinite_batches, make_loader
from parsenet.data.normalization import get_normalization
from parsenet.data.transforms import eval_transform, train_transform
from parsenet.engine.checkpoint import save_checkpoint
from parsenet.engine.evaluator import evaluate
from parsenet.engine.optim import build_optimizer, parameter_groups, poly_schedule
from parsenet.engine.runtime import resolve_device, seed_everything
from parsenet.errors import ConfigError, DataError
from parsenet.models import build_model
from parsenet.models.pretrained import choose_input_norm, initialise_backbone
from parsenet.report import metrics_record, write_json
from parsenet.visualize import comparison_panel, save_png

log = logging.getLogger(__name__)


LOSS_REDUCTIONS = ("mean", "sum")


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, reduction: str = "mean"
) -> torch.Tensor:
    """Pixel-wise cross-entropy over labelled pixels.

    ``mean`` averages over the labelled pixels of the batch (0, not NaN, when there are none);
    ``sum`` sums over them and divides by the batch size only — Caffe's ``SoftmaxWithLoss`` with
    ``normalize: false``, the paper's setting, whose learning rate is ≈ N_labelled_pixels times
    smaller (1e-8 there ≈ 1.5e-3 to 1.9e-3 with ``mean`` on VOC images).
    """
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total / labels.shape[0]
    return total / (labels != ignore_index).sum().clamp(min=1)


POSITIVE_SETTINGS = ("max_iters", "batch_size", "iter_size", "log_every")
NON_NEGATIVE_SETTINGS = ("eval_every", "checkpoint_every", "num_overlays")


def check_settings(cfg: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for ``train.*`` counts and ``data.num_workers`` that are not
    whole numbers in range, before anything is built."""
    checks = [(f"train.{key}", cfg["train"][key], 1) for key in POSITIVE_SETTINGS]
    checks += [(f"train.{key}", cfg["train"][key], 0) for key in NON_NEGATIVE_SETTINGS]
    checks.append(("data.num_workers", cfg["data"]["num_workers"], 0))
    for key, value, minimum in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{key}={value!r} must be a whole number ≥ {minimum}")
    if cfg["train"]["loss"] not in LOSS_REDUCTIONS:
        raise ConfigError(f"train.loss={cfg['train']['loss']!r} is not one of {LOSS_REDUCTIONS}")


class Trainer:
    """Trains one model as a resolved config describes and writes everything into ``run_dir``.

    ``run_dir`` receives ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (by validation
    mIoU), ``tensorboard/`` event files, ``metrics.json`` from the final evaluation and
    ``overlays/`` (image | label | prediction) for a few validation images.

    Args:
        cfg: the resolved config as plain containers (keys ``model``, ``data``, ``train``,
            ``seed``, ``device``), as composed from ``configs/train.yaml``.
        run_dir: output folder.
    """

    def __init__(self, cfg: dict[str, Any], run_dir: str | Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.settings = cfg["train"]
        check_settings(cfg)
        seed_everything(cfg["seed"])
        self.device = resolve_device(cfg["device"])
        data_cfg, model_cfg = cfg["data"], cfg["model"]
        self.info = dataset_info(data_cfg["name"])
        self.model = build_model(model_cfg, self.info.num_classes)
        weights_convention = initialise_backbone(
            self.model.backbone, model_cfg["backbone"].get("pretrained")
        )
        # The checkpoint records the resolved convention, so evaluation normalises the same way.
        model_cfg["input_norm"] = choose_input_norm(model_cfg.get("input_norm"), weights_convention)
        self.model.to(self.device)
        normalization = get_normalization(model_cfg["input_norm"])
        augment = data_cfg["augment"]
        train_set = build_dataset(
            data_cfg,
            data_cfg["train_split"],
            train_transform(
                normalization,
                augment["crop_size"],
                augment["scale_range"],
                augment["flip"],
                seed=cfg["seed"],
            ),
        )
        if len(train_set) < self.settings["batch_size"]:
            raise DataError(
                f"the {data_cfg['train_split']} split has {len(train_set)} images, fewer than "
                f"train.batch_size={self.settings['batch_size']}; lower the batch size"
            )
        self.val_set = build_dataset(data_cfg, data_cfg["val_split"], eval_transform(normalization))
        pin = self.device.type == "cuda"
        self.train_loader = make_loader(
            train_set, self.settings["batch_size"], data_cfg["num_workers"], True, cfg["seed"], pin
        )
        self.val_loader = make_loader(
            self.val_set, 1, data_cfg["num_workers"], False, pin_memory=pin
        )
        self.optimizer = build_optimizer(
            cfg["optim"],
            parameter_groups(
                self.model,
                cfg["optim"]["lr"],
                cfg["optim"].get("weight_decay", 0.0),
                self.settings["new_layer_lr_mult"],
                self.settings["bias_lr_mult"],
            ),
        )
        self.scheduler = poly_schedule(
            self.optimizer, self.settings["max_iters"], self.settings["poly_power"]
        )
        self.iteration = 0
        self.best_miou = float("-inf")
        self.step_lrs: dict[str, float] = {}  # learning rate of each group in the last step
        self._writer: SummaryWriter | None = None

    @property
    def writer(self) -> SummaryWriter:
        """TensorBoard writer, created at the first value logged (a run that fails on its first
        batch leaves no event files)."""
        if self._writer is None:
            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    def train_step(self, batches: Iterator[dict]) -> float:
        """One optimizer step over ``iter_size`` accumulated batches; returns the mean loss."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        iter_size = self.settings["iter_size"]
        total = 0.0
        for _ in range(iter_size):
            batch = next(batches)
            images = batch["image"].to(self.device, non_blocking=True)
            labels = batch["label"].to(self.device, non_blocking=True)
            logits = self.model(images)
            loss = segmentation_loss(logits, labels, self.info.ignore_index, self.settings["loss"])
            loss = loss / iter_size
            loss.backward()
            total += loss.item()
        self.step_lrs = {group["name"]: group["lr"] for group in self.optimizer.param_groups}
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return total

    def validate(self) -> dict[str, Any]:
        """Evaluate on the validation split, log to TensorBoard, keep ``best.pt`` up to date."""
        scores = evaluate(
            self.model, self.val_loader, self.info.num_classes, self.device, self.info.ignore_index
        ).compute(self.info.class_names)
        for key in ("mIoU", "pixel_acc", "mean_acc", "fwIoU"):
            self.writer.add_scalar(f"val/{key}", scores[key], self.iteration)
        log.info(
            "iter %d: val mIoU %.4f, pixel acc %.4f",
            self.iteration,
            scores["mIoU"],
            scores["pixel_acc"],
        )
        if scores["mIoU"] > self.best_miou:
            self.best_miou = scores["mIoU"]
            self.save("best.pt")
        return scores

    def save(self, name: str) -> Path:
        """Write a checkpoint: weights, config and label space (all evaluation needs), plus the
        optimiser and schedule state and the iteration."""
        return save_checkpoint(
            self.run_dir / "checkpoints" / name,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "iteration": self.iteration,
                "best_miou": self.best_miou,
                "config": self.cfg,
                "dataset": self.info.to_dict(),
            },
        )

    def save_overlays(self, count: int) -> None:
        """Write image | label | prediction panels for the first ``count`` validation images."""
        self.model.eval()
        for index in range(min(count, len(self.val_set))):
            image, label = self.val_set.load_pair(index)
            tensor = self.val_set.transform(image, label)["image"]
            with torch.no_grad():
                logits = self.model(tensor.unsqueeze(0).to(self.device))
            prediction = logits.argmax(dim=1)[0].cpu().numpy()
            panel = comparison_panel(
                image, label, prediction, self.info.palette, self.info.ignore_index
            )
            save_png(panel, self.run_dir / "overlays" / f"{self.val_set.sample_name(index)}.png")

    def run(self) -> dict[str, Any]:
        """Train for ``train.max_iters`` iterations, evaluate, and return the final metrics."""
        max_iters, eval_every = self.settings["max_iters"], self.settings["eval_every"]
        checkpoint_every, log_every = self.settings["checkpoint_every"], self.settings["log_every"]
        batches = infinite_batches(self.train_loader)
        images_per_step = self.settings["batch_size"] * self.settings["iter_size"]
        progress = tqdm(total=max_iters, initial=self.iteration, desc="train", disable=None)
        with logging_redirect_tqdm():
            step_seconds, steps = 0.0, 0  # training time since the last log line
            while self.iteration < max_iters:
                started = time.perf_counter()
                loss = self.train_step(batches)
                step_seconds += time.perf_counter() - started
                steps += 1
                progress.update(1)
                progress.set_postfix(loss=f"{loss:.3f}")
                if self.iteration % log_every == 0 or self.iteration == max_iters:
                    eta = (max_iters - self.iteration) * step_seconds / steps
                    self.log_training(loss, images_per_step * steps / step_seconds, eta)
                    step_seconds, steps = 0.0, 0
                if self.iteration == max_iters:
                    break
                if eval_every and self.iteration % eval_every == 0:
                    self.validate()
                if checkpoint_every and self.iteration % checkpoint_every == 0:
                    self.save("last.pt")
            progress.close()
            scores = self.validate()
        last = self.save("last.pt")
        self.save_overlays(self.settings["num_overlays"])
        self.writer.close()
        record = metrics_record(
            scores,
            num_images=len(self.val_set),
            mode="whole",
            checkpoint=str(last),
            dataset=self.info.name,
            split=self.cfg["data"]["val_split"],
        )
        write_json(self.run_dir / "metrics.json", record)
        return record

    def log_training(self, loss: float, images_per_second: float, eta_seconds: float) -> None:
        """Scalars for TensorBoard and one console line (with the learning rates of the step)."""
        self.writer.add_scalar("train/loss", loss, self.iteration)
        self.writer.add_scalar("train/images_per_s", images_per_second, self.iteration)
        for name, lr in self.step_lrs.items():
            self.writer.add_scalar(f"lr/{name}", lr, self.iteration)
        log.info(
            "iter %d/%d: loss %.4f, base lr %.3g, %.1f img/s, ETA %s",
            self.iteration,
            self.settings["max_iters"],
            loss,
            self.step_lrs.get("base_weight", next(iter(self.step_lrs.values()))),
            images_per_second,
            time.strftime("%H:%M:%S", time.gmtime(eta_seconds)),
        )

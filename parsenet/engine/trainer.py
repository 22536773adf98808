"""The iteration-based training loop: poly learning-rate decay, evaluation, checkpoints, resume,
signals, non-finite steps, mixed precision and DDP."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from parsenet.data import build_dataset, dataset_info
from parsenet.data.bad_samples import BadSampleLog
from parsenet.data.loader import collate_samples, make_loader, worker_init
from parsenet.data.normalization import InputNormalization, get_normalization
from parsenet.data.sampling import ResumableSampler, SeededSamples
from parsenet.data.transforms import eval_transform, train_transform
from parsenet.engine.checkpoint import load_checkpoint, save_checkpoint
from parsenet.engine.distributed import (
    DistContext,
    any_process,
    gather_objects,
    main_process_first,
)
from parsenet.engine.evaluator import evaluate, gather_bad_samples, shard
from parsenet.engine.faults import NonFiniteGuard, StopRequest
from parsenet.engine.insight import normalisation_scalars, stack_panels, validation_panels
from parsenet.engine.optim import build_optimizer, parameter_groups, poly_schedule
from parsenet.engine.precision import Precision
from parsenet.engine.runtime import (
    peak_memory_mb,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from parsenet.engine.training_log import TrainingLog
from parsenet.errors import CheckpointError, ConfigError, DataError
from parsenet.fileio import remove_stale_temporaries
from parsenet.models import build_model
from parsenet.models.pretrained import choose_input_norm, initialise_backbone
from parsenet.report import metrics_record, write_json
from parsenet.visualize import save_png

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
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total / labels.shape[0]
    return total / (labels != ignore_index).sum().clamp(min=1)


POSITIVE_SETTINGS = ("max_iters", "batch_size", "iter_size", "log_every", "max_nonfinite")
NON_NEGATIVE_SETTINGS = ("eval_every", "checkpoint_every", "num_overlays", "keep_snapshots")


def check_settings(cfg: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for ``train.*`` counts and ``data.num_workers`` that are not
    whole numbers in range, and for unknown choices, before anything is built."""
    checks = [(f"train.{key}", cfg["train"][key], 1) for key in POSITIVE_SETTINGS]
    checks += [(f"train.{key}", cfg["train"][key], 0) for key in NON_NEGATIVE_SETTINGS]
    checks.append(("data.num_workers", cfg["data"]["num_workers"], 0))
    for key, value, minimum in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{key}={value!r} must be a whole number ≥ {minimum}")
    if cfg["train"]["loss"] not in LOSS_REDUCTIONS:
        raise ConfigError(f"train.loss={cfg['train']['loss']!r} is not one of {LOSS_REDUCTIONS}")


def resume_path(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint ``train.resume`` names: ``auto`` is ``run_dir/checkpoints/last.pt`` when
    it exists (a fresh start otherwise), a path is taken as it is, ``null`` is a fresh start."""
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    return Path(resume)


class Trainer:
    """Trains one model as a resolved config describes and writes everything into ``run_dir``.

    ``run_dir`` receives ``checkpoints/last.pt`` (every ``train.checkpoint_every`` iterations and
    at exit), ``checkpoints/best.pt`` (by validation mIoU), the ``train.keep_snapshots`` most
    recent ``checkpoints/iter_NNNNNN.pt``, ``tensorboard/`` and ``train_log.jsonl``,
    ``metrics.json`` from the final evaluation and ``overlays/`` (image | label | prediction).
    Under torchrun only rank 0 writes; evaluation is shared between the processes.

    Args:
        cfg: the resolved config as plain containers (keys ``model``, ``data``, ``train``,
            ``optim``, ``seed``, ``device``), as composed from ``configs/train.yaml``.
        run_dir: output folder.
        context: this process's place under torchrun (default: one process on ``cfg.device``).
    """

    def __init__(
        self, cfg: dict[str, Any], run_dir: str | Path, context: DistContext | None = None
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.settings = cfg["train"]
        check_settings(cfg)
        self.context = context or DistContext(device=resolve_device(cfg["device"]))
        self.device = self.context.device
        self.precision = Precision(self.settings["amp"], self.device)
        seed_everything(cfg["seed"])
        data_cfg, model_cfg = cfg["data"], cfg["model"]
        self.info = dataset_info(data_cfg)
        # One process downloads weights or generates data, the others read it afterwards.
        with main_process_first(self.context):
            normalization = self._build_model(model_cfg)
            self._build_datasets(data_cfg, normalization)
        self.val_loader = make_loader(
            shard(self.val_set, self.context),
            1,
            data_cfg["num_workers"],
            pin_memory=self.device.type == "cuda",
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
        self.guard = NonFiniteGuard(self.settings["max_nonfinite"])
        self.bad_samples = BadSampleLog()
        self.iteration = 0
        self.best_miou = float("-inf")
        self.step_lrs: dict[str, float] = {}  # learning rate of each group in the last step
        self.log = TrainingLog(self.run_dir, enabled=self.context.is_main)
        if self.context.is_main:
            remove_stale_temporaries(self.run_dir / "checkpoints")  # from a kill mid-save
        checkpoint = resume_path(self.settings["resume"], self.run_dir)
        if checkpoint is not None:
            self.restore(checkpoint)
        self.forward_model = self._wrap_model()

    def _build_model(self, model_cfg: dict[str, Any]) -> InputNormalization:
        """The model, initialised from its pretrained source, on the device; returns the input
        normalisation its weights want (recorded in the config, so checkpoints carry it)."""
        self.model = build_model(model_cfg, self.info.num_classes)
        weights_convention = initialise_backbone(
            self.model.backbone, model_cfg["backbone"].get("pretrained")
        )
        model_cfg["input_norm"] = choose_input_norm(model_cfg.get("input_norm"), weights_convention)
        channels_last = self.settings["channels_last"]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        return get_normalization(model_cfg["input_norm"])

    def _build_datasets(self, data_cfg: dict[str, Any], normalization: InputNormalization) -> None:
        """The training split (augmented) and the validation split (as it is)."""
        augment = data_cfg["augment"]
        self.train_set = build_dataset(
            data_cfg,
            data_cfg["train_split"],
            train_transform(
                normalization, augment["crop_size"], augment["scale_range"], augment["flip"]
            ),
        )
        self.global_batch = self.settings["batch_size"] * self.context.world_size
        if len(self.train_set) < self.global_batch:
            processes = self.context.world_size
            per = f" × {processes} processes" if processes > 1 else ""
            raise DataError(
                f"the {data_cfg['train_split']} split has {len(self.train_set)} images, fewer "
                f"than train.batch_size={self.settings['batch_size']}{per}; lower the batch size"
            )
        self.val_set = build_dataset(data_cfg, data_cfg["val_split"], eval_transform(normalization))

    def _wrap_model(self) -> torch.nn.Module:
        """DDP across processes and ``torch.compile`` where asked; ``self.model`` stays the
        plain module whose weights are saved."""
        model: torch.nn.Module = self.model
        if self.context.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        if self.settings["compile"]:
            model = torch.compile(model)
        return model

    def train_loader(self) -> DataLoader:
        """The endless training loader, positioned after the samples already consumed."""
        sampler = ResumableSampler(
            len(self.train_set),
            self.global_batch,
            seed=self.cfg["seed"],
            rank=self.context.rank,
            world_size=self.context.world_size,
            start=self.samples_seen(),
        )
        workers = self.cfg["data"]["num_workers"]
        return DataLoader(
            SeededSamples(self.train_set),
            batch_size=self.settings["batch_size"],
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=worker_init,
            collate_fn=collate_samples,
            # Its own generator: starting the loader never draws from the global torch RNG, which
            # a resumed run restores from the checkpoint (dropout draws from it).
            generator=torch.Generator().manual_seed(self.cfg["seed"]),
        )

    def epoch(self) -> int:
        """Passes over the training split this process has completed."""
        per_epoch = len(self.train_set) // self.global_batch * self.settings["batch_size"]
        return self.samples_seen() // per_epoch

    def samples_seen(self) -> int:
        """Training samples this process has consumed: its position in the data order."""
        return self.iteration * self.settings["iter_size"] * self.settings["batch_size"]

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds (see :meth:`restore`)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "iteration": self.iteration,
            "best_miou": self.best_miou,
            "nonfinite": self.guard.state_dict(),
            "bad_samples": dict(gather_bad_samples(self.bad_samples, self.context).counts),
            "rng": gather_objects(rng_state(), self.context),  # one per process
            "samples_seen": self.samples_seen(),
            "config": self.cfg,
            "dataset": self.info.to_dict(),
        }

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint: weights, optimiser, schedule, scaler, counters, RNG states;
        the data order follows from the iteration."""
        checkpoint = load_checkpoint(path)
        if "optimizer" not in checkpoint or "rng" not in checkpoint:
            raise CheckpointError(
                f"checkpoint {path} holds weights only (e.g. a converted Caffe model), not a "
                "training state to resume; evaluate or predict with it, or start a new run"
            )
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            first = str(error).strip().splitlines()[0]
            raise CheckpointError(
                f"checkpoint {path} does not fit this model or optimiser ({first}); resume with "
                "the settings it was trained with"
            ) from None
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.precision.scaler.load_state_dict(checkpoint["scaler"])
        self.guard.load_state_dict(checkpoint["nonfinite"])
        if self.context.is_main:  # counts of all processes, kept once
            self.bad_samples.merge(checkpoint.get("bad_samples", {}))
        self.iteration = checkpoint["iteration"]
        self.best_miou = checkpoint["best_miou"]
        states = checkpoint["rng"]
        if len(states) != self.context.world_size:
            log.warning(
                "%s was written by %d process(es), this run has %d: random streams (dropout) "
                "start from process 0's, so the continuation is not bit-exact",
                path,
                len(states),
                self.context.world_size,
            )
        set_rng_state(states[self.context.rank % len(states)])
        log.info("resumed from %s at iteration %d", path, self.iteration)

    def save(self, name: str) -> Path | None:
        """Write ``checkpoints/<name>`` atomically. Every process calls it (the random states of
        all are gathered); only rank 0 writes."""
        state = self.state()
        if not self.context.is_main:
            return None
        return save_checkpoint(self.run_dir / "checkpoints" / name, state)

    def save_snapshot(self) -> None:
        """Write ``checkpoints/iter_NNNNNN.pt`` and keep only the most recent ones."""
        keep = self.settings["keep_snapshots"]
        if not keep or self.save(f"iter_{self.iteration:06d}.pt") is None:
            return
        snapshots = sorted((self.run_dir / "checkpoints").glob("iter_*.pt"))
        for old in snapshots[:-keep]:
            old.unlink()

    def forward_loss(self, batch: dict) -> torch.Tensor:
        """The loss of one batch under the configured precision."""
        images = batch["image"].to(self.device, non_blocking=True)
        images = images.contiguous(memory_format=self.memory_format)
        labels = batch["label"].to(self.device, non_blocking=True)
        with self.precision.autocast():
            logits = self.forward_model(images)
        return segmentation_loss(logits, labels, self.info.ignore_index, self.settings["loss"])

    def train_step(self, batches: Iterator[dict]) -> dict[str, float]:
        """One optimizer step over ``iter_size`` accumulated batches.

        A step whose loss or gradient norm is not finite is skipped (weights unchanged) and
        counted. Returns the step's loss, gradient norm, data and step time.
        """
        started = time.perf_counter()
        self.forward_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        iter_size, scaler = self.settings["iter_size"], self.precision.scaler
        total, data_seconds = 0.0, 0.0
        for micro in range(iter_size):
            fetched = time.perf_counter()
            batch = next(batches)
            data_seconds += time.perf_counter() - fetched
            self.bad_samples.record(batch["skipped"])
            sync = micro == iter_size - 1 or not self.context.distributed
            with nullcontext() if sync else self.forward_model.no_sync():
                loss = self.forward_loss(batch) / iter_size
                scaler.scale(loss).backward()
            total += loss.item()
        self.step_lrs = {group["name"]: group["lr"] for group in self.optimizer.param_groups}
        scaler.unscale_(self.optimizer)
        # The norm alone: clip_grad_norm_ with an infinite limit would also rescale every gradient
        # by 1, a wasted pass over all of them (docs/benchmarks.md).
        gradients = [p.grad for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(gradients).item()
        # With fp16 an overflowing gradient is the scaler's business: it skips that step itself.
        checked_norm = 0.0 if scaler.is_enabled() else grad_norm
        if self.guard.check(total, checked_norm, self.iteration + 1):
            scaler.step(self.optimizer)
        else:
            log.warning(
                "iter %d: non-finite loss %s or gradient norm %s, step skipped (%d so far)",
                self.iteration + 1,
                total,
                grad_norm,
                self.guard.total,
            )
        scaler.update()
        with warnings.catch_warnings():  # a skipped step is not the ordering mistake it warns of
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()
        self.iteration += 1
        return {
            "loss": total,
            "grad_norm": grad_norm,
            "data_seconds": data_seconds,
            "step_seconds": time.perf_counter() - started,
        }

    def validate(self) -> dict[str, Any]:
        """Evaluate on the validation split (shared between processes), log, keep ``best.pt``.

        The scores carry ``num_images``: the validation images scored (skipped ones left out).
        """
        skipped_before = self.bad_samples.total
        confusion = evaluate(
            self.model,
            self.val_loader,
            self.info.num_classes,
            self.device,
            self.info.ignore_index,
            context=self.context,
            bad_samples=self.bad_samples,
        )
        scores = confusion.compute(self.info.class_names)
        skipped = sum(gather_objects(self.bad_samples.total - skipped_before, self.context))
        scores["num_images"] = len(self.val_set) - skipped
        self.log.scalars(
            self.iteration,
            {f"val/{key}": scores[key] for key in ("mIoU", "pixel_acc", "mean_acc", "fwIoU")},
            kind="val",
        )
        log.info(
            "iter %d: val mIoU %.4f, pixel acc %.4f",
            self.iteration,
            scores["mIoU"],
            scores["pixel_acc"],
        )
        self.log_insight(scores)
        if scores["mIoU"] > self.best_miou:
            self.best_miou = scores["mIoU"]
            self.save("best.pt")
        return scores

    def save_overlays(self, count: int) -> None:
        """Write image | label | prediction panels for the first ``count`` validation images."""
        if not self.context.is_main:
            return
        for name, panel, _ in validation_panels(self.model, self.val_set, count, self.device):
            save_png(panel, self.run_dir / "overlays" / f"{name}.png")

    def log_insight(self, scores: dict[str, Any]) -> None:
        """TensorBoard at each evaluation: per-class IoU, a grid of validation panels, the learned
        γ of every L2Norm and the feature norm of every tapped layer (rank 0 only)."""
        if not self.context.is_main:
            return
        values = {
            f"val_iou/{name}": iou
            for name, iou in scores["per_class_iou"].items()
            if iou is not None
        }
        count = max(self.settings["num_overlays"], 1)
        panels = validation_panels(self.model, self.val_set, count, self.device)
        values.update(normalisation_scalars(self.model, [tensor for _, _, tensor in panels]))
        self.log.scalars(self.iteration, values, kind="insight")
        if panels:
            self.log.image(
                "val/panels", stack_panels([panel for _, panel, _ in panels]), self.iteration
            )

    def run(self) -> dict[str, Any]:
        """Train up to ``train.max_iters`` iterations, evaluate, and return the final metrics.

        On SIGINT/SIGTERM the current step is finished, ``last.pt`` saved and the returned
        record has ``stopped`` set to the signal's name (no final evaluation).
        """
        max_iters, eval_every = self.settings["max_iters"], self.settings["eval_every"]
        checkpoint_every, log_every = self.settings["checkpoint_every"], self.settings["log_every"]
        window: list[dict[str, float]] = []  # steps since the last log line
        with StopRequest() as stop, logging_redirect_tqdm():
            if self.iteration == 0:
                self.log.config(self.cfg)
            batches = iter(self.train_loader())
            progress = tqdm(
                total=max_iters,
                initial=self.iteration,
                desc="train",
                disable=None if self.context.is_main else True,
            )
            while self.iteration < max_iters:
                epoch = self.epoch()
                step = self.train_step(batches)
                if self.epoch() > epoch and self.bad_samples.total:
                    log.warning(
                        "epoch %d: %d bad samples skipped so far (%d files); see the run summary",
                        epoch + 1,
                        self.bad_samples.total,
                        len(self.bad_samples.counts),
                    )
                window.append(step)
                progress.update(1)
                progress.set_postfix(loss=f"{step['loss']:.3f}")
                if self.iteration % log_every == 0 or self.iteration == max_iters:
                    self.log_training(window)
                    window = []
                if any_process(stop.requested, self.context):
                    progress.close()
                    return self.stopped(stop.signal_name or "a stop signal in another process")
                if self.iteration == max_iters:
                    break
                if eval_every and self.iteration % eval_every == 0:
                    self.validate()
                if checkpoint_every and self.iteration % checkpoint_every == 0:
                    self.save("last.pt")
                    self.save_snapshot()
            progress.close()
            scores = self.validate()
        last = self.save("last.pt") or self.run_dir / "checkpoints" / "last.pt"
        self.save_snapshot()
        self.save_overlays(self.settings["num_overlays"])
        self.log.close()
        record = metrics_record(
            scores,
            num_images=scores["num_images"],
            mode="whole",
            checkpoint=str(last),
            dataset=self.info.name,
            split=self.cfg["data"]["val_split"],
        )
        if self.cfg["data"].get("on_bad_sample") == "skip":  # the same in every process
            record["bad_samples"] = gather_bad_samples(self.bad_samples, self.context).summary()
        if self.context.is_main:
            write_json(self.run_dir / "metrics.json", record)
        return record

    def stopped(self, signal_name: str) -> dict[str, Any]:
        """Save ``last.pt`` after a stop signal and say how to continue."""
        path = self.save("last.pt")
        self.log.close()
        log.warning(
            "stopped by %s at iteration %d/%d; saved %s; resume with train.resume=auto "
            "hydra.run.dir=%s",
            signal_name,
            self.iteration,
            self.settings["max_iters"],
            path,
            self.run_dir,
        )
        return {"stopped": signal_name, "iteration": self.iteration, "checkpoint": str(path)}

    def log_training(self, window: list[dict[str, float]]) -> None:
        """Scalars for TensorBoard and the JSON-lines log, and one console line."""
        steps = len(window)
        step_seconds = sum(s["step_seconds"] for s in window)
        images_per_second = (
            self.global_batch * self.settings["iter_size"] * steps / max(step_seconds, 1e-9)
        )
        values = {
            "train/loss": window[-1]["loss"],
            "train/grad_norm": window[-1]["grad_norm"],
            "train/step_seconds": step_seconds / steps,
            "train/data_seconds": sum(s["data_seconds"] for s in window) / steps,
            "train/images_per_s": images_per_second,
            "train/nonfinite_steps": self.guard.total,
            "memory/peak_mb": peak_memory_mb(self.device),
        }
        values.update({f"lr/{name}": lr for name, lr in self.step_lrs.items()})
        self.log.scalars(self.iteration, values)
        eta = (self.settings["max_iters"] - self.iteration) * step_seconds / steps
        log.info(
            "iter %d/%d: loss %.4f, base lr %.3g, %.1f img/s, ETA %s",
            self.iteration,
            self.settings["max_iters"],
            window[-1]["loss"],
            self.step_lrs.get("base_weight", next(iter(self.step_lrs.values()))),
            images_per_second,
            time.strftime("%H:%M:%S", time.gmtime(eta)),
        )

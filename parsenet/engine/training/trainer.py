"""The iteration-based training loop (steps, evaluation, checkpoints, resume, signals, non-finite
steps, AMP, DDP); its settings, parts, state, loss and logs live in the modules beside it."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from parsenet.data import dataset_info
from parsenet.data.bad_samples import BadSampleLog
from parsenet.engine.runtime.distributed import DistContext, any_process
from parsenet.engine.runtime.precision import Precision
from parsenet.engine.runtime.process import peak_memory_mb, resolve_device, seed_everything
from parsenet.engine.scoring.split import gather_bad_samples
from parsenet.engine.training.assembly import assemble, forward_module, training_loader
from parsenet.engine.training.faults import NonFiniteGuard, StopRequest, check_finite_weights
from parsenet.engine.training.log import TrainingLog, progress_line, step_scalars
from parsenet.engine.training.settings import TrainSettings
from parsenet.engine.training.state import CheckpointFolder, TrainingState, training_set_id
from parsenet.evaluation import result_of

log = logging.getLogger(__name__)


class Trainer:
    """Trains one model as a resolved config describes and writes everything into ``run_dir``.

    ``run_dir`` receives ``checkpoints/last.pt`` (every ``train.checkpoint_every`` iterations, on a
    stop signal, and before and after the final evaluation), ``checkpoints/best.pt`` (by
    validation mIoU), the ``train.keep_snapshots`` most recent ``checkpoints/iter_NNNNNN.pt``,
    ``tensorboard/`` and ``train_log.jsonl``,
    ``metrics.json`` from the final evaluation and ``overlays/`` (image | label | prediction).
    Under torchrun only rank 0 writes; evaluation is shared between the processes.

    Args:
        cfg: the resolved config as plain containers (``model``, ``data``, ``optim``,
            ``lr_mult``, ``schedule``, ``loss``, ``train``, ``seed``, ``device``), as composed
            from ``configs/train.yaml``; it is not modified.
        run_dir: output folder.
        context: this process's place under torchrun (default: one process on ``cfg.device``).
    """

    def __init__(
        self, cfg: dict[str, Any], run_dir: str | Path, context: DistContext | None = None
    ) -> None:
        self.settings = TrainSettings.from_config(cfg)
        self.run_dir = Path(run_dir)
        self.context = context or DistContext(device=resolve_device(cfg["device"]))
        self.device = self.context.device
        self.precision = Precision(self.settings.amp, self.device)
        seed_everything(self.settings.seed)
        self.info = dataset_info(cfg["data"])
        parts = assemble(cfg, self.settings, self.info, self.context)
        self.cfg = parts.config
        self.model, self.memory_format = parts.model, parts.memory_format
        self.train_set = parts.train_set
        self.validation = parts.validation
        self.optimizer, self.loss = parts.optimizer, parts.loss
        self.global_batch = self.settings.batch_size * self.context.world_size
        self.state = TrainingState(
            self.model,
            self.optimizer,
            parts.scheduler,
            self.precision,
            NonFiniteGuard(self.settings.max_nonfinite),
            BadSampleLog(),
        )
        self.step_lrs: dict[str, float] = {}  # learning rate of each group in the last step
        self.log = TrainingLog(self.run_dir, enabled=self.context.is_main)
        self.checkpoints = CheckpointFolder(
            self.run_dir / "checkpoints", self.settings.keep_snapshots, self.context.is_main
        )
        data = self.cfg["data"]
        self.train_set_id = training_set_id(self.train_set, self.info.name, data["train_split"])
        resume = self.settings.resume_path(self.run_dir)
        if resume is not None:
            self.state.restore(resume, self.context, self.cfg, self.train_set_id)
        self.forward_model = forward_module(self.model, self.settings, self.context)

    @property
    def iteration(self) -> int:
        """Optimiser steps taken so far."""
        return self.state.iteration

    @property
    def guard(self) -> NonFiniteGuard:
        """The count of steps with a non-finite loss or gradient."""
        return self.state.guard

    def train_loader(self) -> DataLoader:
        """The endless training loader, positioned after the samples already consumed."""
        return training_loader(self.train_set, self.settings, self.context, self.samples_seen())

    def epoch(self) -> int:
        """Passes over the training split this process has completed."""
        per_epoch = len(self.train_set) // self.global_batch * self.settings.batch_size
        return self.samples_seen() // per_epoch

    def samples_seen(self) -> int:
        """Training samples this process has consumed: its position in the data order."""
        return self.iteration * self.settings.iter_size * self.settings.batch_size

    def captured(self) -> dict[str, Any]:
        """The checkpoint content of this moment (every process calls it: states are gathered)."""
        dataset = self.info.to_dict()
        state = self.state.capture(self.samples_seen(), self.cfg, dataset, self.context)
        return {**state, "train_set": self.train_set_id}

    def save(self, name: str) -> Path:
        """Write ``checkpoints/<name>``; every process calls it, rank 0 writes."""
        return self.checkpoints.save(name, self.captured())

    def save_snapshot(self) -> None:
        """Write ``checkpoints/iter_NNNNNN.pt``, keeping only the most recent ones."""
        if self.settings.keep_snapshots:
            self.checkpoints.snapshot(self.iteration, self.captured())

    def forward_loss(self, batch: dict) -> torch.Tensor:
        """The loss of one batch under the configured precision."""
        images = batch["image"].to(self.device, non_blocking=True)
        images = images.contiguous(memory_format=self.memory_format)
        labels = batch["label"].to(self.device, non_blocking=True)
        with self.precision.autocast():
            logits = self.forward_model(images)
        return self.loss(logits, labels)

    def train_step(self, batches: Iterator[dict]) -> dict[str, float]:
        """One optimizer step over ``iter_size`` accumulated batches.

        A step whose loss or gradient norm is not finite is skipped (weights unchanged) and
        counted; an update that makes a weight non-finite stops training (see
        :func:`check_finite_weights`). Returns the step's loss, gradient norm, data and step
        time.
        """
        started = time.perf_counter()
        self.forward_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        iter_size, scaler = self.settings.iter_size, self.precision.scaler
        total, data_seconds = 0.0, 0.0
        for micro in range(iter_size):
            fetched = time.perf_counter()
            batch = next(batches)
            data_seconds += time.perf_counter() - fetched
            self.state.bad_samples.record(batch["skipped"])
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
        guard = self.guard
        if guard.check(total, checked_norm, self.iteration + 1):
            scaler.step(self.optimizer)
            lr = self.cfg["optim"]["lr"]
            check_finite_weights(self.model.parameters(), self.iteration + 1, lr)
        else:
            log.warning(
                "iter %d: non-finite loss %s or gradient norm %s, step skipped (%d so far)",
                self.iteration + 1,
                total,
                grad_norm,
                guard.total,
            )
        scaler.update()
        with warnings.catch_warnings():  # a skipped step is not the ordering mistake it warns of
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.state.scheduler.step()
        self.state.iteration += 1
        return {
            "loss": total,
            "grad_norm": grad_norm,
            "data_seconds": data_seconds,
            "step_seconds": time.perf_counter() - started,
        }

    def validate(self) -> dict[str, Any]:
        """Score the validation split (see :class:`Validation`) and keep ``best.pt``."""
        scores = self.validation.run(self.model, self.iteration, self.log, self.state.bad_samples)
        if scores["mIoU"] > self.state.best_miou:
            self.state.best_miou = scores["mIoU"]
            self.save("best.pt")
        return scores

    def run(self) -> dict[str, Any]:
        """Train up to ``train.max_iters`` iterations, evaluate, and return the final metrics.

        On SIGINT/SIGTERM the current step is finished, ``last.pt`` saved and the returned
        record has ``stopped`` set to the signal's name (no final evaluation). ``last.pt`` is
        saved before the final evaluation, so a failure or a kill during it loses no step
        (``train.resume=auto`` then runs the evaluation again), and after it, holding its score
        for ``best.pt``'s comparisons. The progress bar and the logs are closed however the loop
        ends.
        """
        with ExitStack() as cleanup:
            stop = cleanup.enter_context(StopRequest())
            cleanup.enter_context(logging_redirect_tqdm())
            cleanup.callback(self.log.close)
            shown = None if self.context.is_main else True  # tqdm: None = on a terminal
            progress = cleanup.enter_context(
                tqdm(total=self.settings.max_iters, initial=self.iteration, disable=shown)
            )
            if self.iteration == 0:
                self.log.config(self.cfg)
            if not self.loop(stop, progress):
                return self.stopped(stop.signal_name or "a stop signal in another process")
            progress.close()
            self.save("last.pt")
            scores = self.validate()
        return self.finish(scores)

    def loop(self, stop: StopRequest, progress: tqdm) -> bool:
        """The iterations up to ``train.max_iters``; False when a stop signal ended them."""
        settings = self.settings
        batches = iter(self.train_loader())
        window: list[dict[str, float]] = []  # steps since the last log line
        while self.iteration < settings.max_iters:
            epoch = self.epoch()
            step = self.train_step(batches)
            if self.epoch() > epoch and self.state.bad_samples.total:
                log.warning(
                    "epoch %d: %d bad samples skipped so far (%d files); see the run summary",
                    epoch + 1,
                    self.state.bad_samples.total,
                    len(self.state.bad_samples.counts),
                )
            window.append(step)
            progress.update(1)
            progress.set_postfix(loss=f"{step['loss']:.3f}")
            at_end = self.iteration == settings.max_iters
            if self.iteration % settings.log_every == 0 or at_end:
                self.log_training(window)
                window = []
            if any_process(stop.requested, self.context):
                return False
            if at_end:
                break
            if settings.eval_every and self.iteration % settings.eval_every == 0:
                self.validate()
            if settings.checkpoint_every and self.iteration % settings.checkpoint_every == 0:
                self.save("last.pt")
                self.save_snapshot()
        return True

    def finish(self, scores: dict[str, Any]) -> dict[str, Any]:
        """After the final evaluation: ``last.pt`` (with the best score so far), a snapshot,
        overlays, and the evaluation's files (``metrics.json``, ``confusion.npy``/``.png``,
        ``per_image.csv`` and, with ``train.report``, ``report.html``)."""
        last = self.save("last.pt")
        self.save_snapshot()
        self.validation.save_overlays(self.model, self.run_dir / "overlays")
        bad_samples = None
        if self.cfg["data"].get("on_bad_sample") == "skip":  # the same in every process
            bad_samples = gather_bad_samples(self.state.bad_samples, self.context).summary()
        result = result_of(
            self.validation.counts,
            self.cfg["data"],
            self.cfg["data"]["val_split"],
            num_images=scores["num_images"],
            inference=self.settings.inference.describe(),
            source=str(last),
            model=self.cfg["model"]["name"],
            bad_samples=bad_samples,
            layout=self.cfg["layout"],  # the memory layout chosen (runtime/memory_format.py)
            seed=self.settings.seed,
        )
        if self.context.is_main:
            result.write(self.run_dir, report=self.settings.report)
        return result.record()

    def stopped(self, signal_name: str) -> dict[str, Any]:
        """Save ``last.pt`` after a stop signal and say how to continue."""
        path = self.save("last.pt")
        log.warning(
            "stopped by %s at iteration %d/%d; saved %s; resume with train.resume=auto "
            "hydra.run.dir=%s",
            signal_name,
            self.iteration,
            self.settings.max_iters,
            path,
            self.run_dir,
        )
        return {"stopped": signal_name, "iteration": self.iteration, "checkpoint": str(path)}

    def log_training(self, window: list[dict[str, float]]) -> None:
        """Scalars for TensorBoard and the JSON-lines log, and one console line."""
        values = step_scalars(window, self.global_batch * self.settings.iter_size)
        values["train/nonfinite_steps"] = self.state.guard.total
        values["memory/peak_mb"] = peak_memory_mb(self.device)
        values.update({f"lr/{name}": lr for name, lr in self.step_lrs.items()})
        self.log.scalars(self.iteration, values)
        base_lr = self.step_lrs.get("base_weight", next(iter(self.step_lrs.values())))
        log.info(progress_line(values, self.iteration, self.settings.max_iters, base_lr))

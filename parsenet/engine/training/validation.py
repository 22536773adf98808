"""Validation during training: the split scored as the ``inference`` node says, logged with the
insight scalars and panels, and the final overlays."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from parsenet.data.bad_samples import BadSampleLog
from parsenet.data.base import SegmentationDataset
from parsenet.engine.runtime.distributed import DistContext
from parsenet.engine.scoring.inference import InferenceMode
from parsenet.engine.scoring.split import gather_bad_samples, require_scored_images, score_split
from parsenet.engine.training.insight import evaluation_insight, validation_panels
from parsenet.engine.training.log import TrainingLog
from parsenet.metrics import SplitScores
from parsenet.visualize import save_png

log = logging.getLogger(__name__)
# Logged as val/<key> at every evaluation (the per-image context statistics too).
SUMMARY_SCORES = (
    "mIoU",
    "boundary_iou",
    "pixel_acc",
    "mean_acc",
    "fwIoU",
    "out_of_context",
    "class_set_accuracy",
)


@dataclass
class Validation:
    """Scores a model on the validation split while it trains.

    Attributes:
        dataset: the whole validation split; loader: this process's share of it.
        inference: how scores are formed (the ``inference`` node).
        context: this process's place under torchrun.
        panels: how many image | label | prediction panels TensorBoard gets.
        split: the split's name, for messages.
        report_worst: the worst images (by per-image mIoU) kept with their pictures.
        counts: what the last evaluation counted (None before the first).
    """

    dataset: SegmentationDataset
    loader: DataLoader
    inference: InferenceMode
    context: DistContext
    panels: int
    split: str
    report_worst: int
    counts: SplitScores | None = field(default=None, init=False)

    def run(
        self, model: torch.nn.Module, iteration: int, log_to: TrainingLog, bad_samples: BadSampleLog
    ) -> dict[str, Any]:
        """Evaluate ``model`` (shared between processes), log the scores and, on rank 0, the
        insight. The scores carry ``num_images``: the images scored (skipped ones left out).

        Raises:
            DataError: no image of the split could be scored (all skipped as unreadable).
        """
        info, device = self.dataset.info, self.context.device
        before = Counter(bad_samples.counts)
        confusion = score_split(
            model,
            self.loader,
            info.num_classes,
            device,
            info.ignore_index,
            context=self.context,
            inference=self.inference,
            bad_samples=bad_samples,
            keep=self.report_worst,
        )
        self.counts = confusion
        this_pass = BadSampleLog()
        this_pass.merge(bad_samples.counts - before)
        lost = gather_bad_samples(this_pass, self.context).summary()  # of every process
        require_scored_images(self.split, len(self.dataset), lost["skipped"], lost["files"])
        scores = confusion.compute(info.class_names)
        scores["num_images"] = len(self.dataset) - lost["skipped"]
        log_to.scalars(iteration, {f"val/{key}": scores[key] for key in SUMMARY_SCORES}, "val")
        log.info(
            "iter %d: val mIoU %.4f, pixel acc %.4f, out of context %.4f, class-set acc %.4f",
            iteration,
            scores["mIoU"],
            scores["pixel_acc"],
            scores["out_of_context"],
            scores["class_set_accuracy"],
        )
        if self.context.is_main:
            values, grid = evaluation_insight(
                model, self.dataset, scores["per_class_iou"], max(self.panels, 1), device
            )
            log_to.scalars(iteration, values, kind="insight")
            if grid is not None:
                log_to.image("val/panels", grid, iteration)
        return scores

    def save_overlays(self, model: torch.nn.Module, folder: Path) -> None:
        """Write image | label | prediction panels of the first ``panels`` images (rank 0)."""
        if not self.context.is_main:
            return
        panels = validation_panels(model, self.dataset, self.panels, self.context.device)
        for name, panel, _ in panels:
            save_png(panel, folder / f"{name}.png")

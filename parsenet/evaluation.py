"""Scoring a checkpoint, or a folder of saved predictions, on a dataset split:
:func:`evaluate`, :func:`score_predictions` and their :class:`EvaluationResult` (metrics.json,
confusion.npy/png, per_image.csv, report.html)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parsenet.data import build_dataset, dataset_info
from parsenet.data.bad_samples import BadSampleLog
from parsenet.data.loader import make_loader
from parsenet.data.transforms import eval_transform
from parsenet.engine.runtime.distributed import DistContext, main_process_first, shard_indices
from parsenet.engine.scoring.inference import WHOLE_IMAGE, InferenceMode
from parsenet.engine.scoring.prediction_folder import score_prediction_folder
from parsenet.engine.scoring.split import (
    gather_bad_samples,
    require_scored_images,
    score_split,
    shard,
)
from parsenet.errors import ConfigError
from parsenet.fileio import atomic_write
from parsenet.html.evaluation_report import write_evaluation_report
from parsenet.image_scores import WORST_IMAGES, ImageScores, write_per_image_csv
from parsenet.loading import load_for_inference
from parsenet.metrics import SplitScores
from parsenet.provenance import code_commit
from parsenet.report import metrics_record, write_json
from parsenet.visualize import confusion_image, save_png


@dataclass
class EvaluationResult:
    """Scores of one split, and what they were measured on.

    Attributes:
        scores: ``mIoU``, ``pixel_acc``, ``mean_acc``, ``fwIoU`` (fractions in [0, 1]),
            ``per_class_iou`` and ``per_class_acc`` (class name → fraction, or None for a class
            absent from labels and predictions); from the same predictions, per image over
            labelled pixels, ``out_of_context`` (the fraction of the split's labelled pixels
            predicted as a class absent from their image's label) and ``class_set_accuracy``
            (the fraction of images whose predicted class set equals their true one).
        confusion: K×K pixel counts, rows the label, columns the prediction.
        class_names: the K classes; dataset, split: what was scored.
        num_images: images scored (skipped unreadable ones left out).
        inference: the mode and its settings (``{"mode": "predictions"}`` for saved PNGs).
        source: the checkpoint or the prediction folder.
        model: the model's config name (``parsenet``, ``fcn``, …), or ``predictions``.
        bad_samples: skipped pairs under ``data.on_bad_sample=skip`` (None otherwise).
        layout: the memory layout the model ran in and how it was chosen
            (``LayoutChoice.record``; None for saved predictions).
        palette, ignore_index: the classes' colours and the ignore label (for the report).
        images: the per-image records and the worst images (:class:`ImageScores`; None: not
            kept).
        seed: the training seed of the checkpoint (None: not known).
        commit: the git commit of the code that scored it (None outside a git checkout).
        precision: the backend and precision the model ran in (``{"backend": "onnxruntime",
            "precision": "int8"}``; None for saved predictions).
    """

    scores: dict[str, Any]
    confusion: np.ndarray
    class_names: list[str]
    dataset: str
    split: str
    num_images: int
    inference: dict[str, Any]
    source: str
    model: str
    bad_samples: dict[str, Any] | None = field(default=None)
    layout: dict[str, Any] | None = field(default=None)
    palette: list[list[int]] = field(default_factory=list)
    ignore_index: int = 255
    images: ImageScores | None = field(default=None, repr=False)
    seed: int | None = field(default=None)
    commit: str | None = field(default_factory=code_commit)
    precision: dict[str, str] | None = field(default=None)

    @property
    def miou(self) -> float:
        """Mean IoU over the classes present (a fraction)."""
        return self.scores["mIoU"]

    def record(self) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        record = metrics_record(
            self.scores,
            num_images=self.num_images,
            mode=self.inference["mode"],
            checkpoint=self.source,
            dataset=self.dataset,
            split=self.split,
            inference=self.inference,
        )
        if self.bad_samples is not None:
            record["bad_samples"] = self.bad_samples
        if self.layout is not None:
            record["layout"] = self.layout
        if self.precision is not None:
            record["precision"] = self.precision
        return record

    def write(self, folder: str | Path, report: bool = True) -> dict[str, Path]:
        """Write ``metrics.json``, ``confusion.npy``, ``confusion.png``, ``per_image.csv`` (when
        per-image records were kept) and, unless ``report`` is False, ``report.html`` into
        ``folder`` (each atomically); returns their paths by name (``metrics``, ``confusion``,
        ``picture``, ``per_image``, ``report``)."""
        folder = Path(folder)
        matrix = self.confusion
        written = {
            "metrics": write_json(folder / "metrics.json", self.record()),
            "confusion": atomic_write(folder / "confusion.npy", lambda out: np.save(out, matrix)),
            "picture": save_png(
                confusion_image(matrix, self.class_names), folder / "confusion.png"
            ),
        }
        if self.images is not None:
            written["per_image"] = write_per_image_csv(
                folder / "per_image.csv", self.images.records, self.class_names
            )
        if report:
            written["report"] = write_evaluation_report(folder / "report.html", self)
        return written


def result_of(
    counts: SplitScores, data_cfg: Mapping[str, Any], split: str, **about: Any
) -> EvaluationResult:
    """An :class:`EvaluationResult` from a split's summed counts (confusion matrix, boundary
    IoU, context statistics, per-image records)."""
    info = dataset_info(data_cfg)
    return EvaluationResult(
        scores=counts.compute(info.class_names),
        confusion=counts.matrix.cpu().numpy(),
        class_names=list(info.class_names),
        dataset=info.name,
        split=split,
        palette=[list(colour) for colour in info.palette[: info.num_classes]],
        ignore_index=info.ignore_index,
        images=counts.images,
        **about,
    )


def evaluate(
    checkpoint: str | Path,
    data: Mapping[str, Any] | None = None,
    split: str | None = None,
    mode: InferenceMode = WHOLE_IMAGE,
    device: str = "auto",
    model: Mapping[str, Any] | None = None,
    context: DistContext | None = None,
    progress: bool = False,
    channels_last: bool | str = "auto",
    report_worst: int = WORST_IMAGES,
    backend: str = "torch",
    precision: str = "fp32",
    calibration: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """Score a checkpoint on a split, at each label's own resolution.

    Args:
        checkpoint: the ``.pt`` file.
        data: data config keys laid over the checkpoint's (``{"root": "/datasets"}``), or a whole
            data config with ``name`` set (another dataset with the same classes).
        split: default: the data's ``val_split``.
        mode: whole image (default), ``InferenceMode("slide", crop, stride)`` or
            ``InferenceMode("msflip", scales=…, flip=…)``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (with ``context``: its device).
        model: model config keys laid over the checkpoint's (they must fit its weights).
        context: this process's place under torchrun: images are shared, each counted once.
        progress: show a progress bar.
        channels_last: the memory layout, as :func:`~parsenet.loading.load_for_inference` takes it
            (``auto``: the faster one here).
        report_worst: how many of the worst images (by per-image mIoU) the result keeps with
            their pictures for ``report.html``.
        backend, precision, calibration: how the model runs (``onnxruntime`` and ``int8``, …),
            as :func:`~parsenet.loading.load_for_inference` takes them.

    Raises:
        DataError: no image of the split could be scored (all skipped as unreadable under
            ``data.on_bad_sample=skip``), besides the errors of :func:`load_for_inference`.
    """
    context = context or DistContext()
    loaded = load_for_inference(
        checkpoint,
        context.device if context.distributed else device,
        model,
        data,
        channels_last,
        backend,
        precision,
        calibration,
    )
    data_cfg = loaded.data_config
    split = split or data_cfg["val_split"]
    info = dataset_info(data_cfg)
    with main_process_first(context):
        dataset = build_dataset(data_cfg, split, eval_transform(loaded.normalization))
    loader = make_loader(
        shard(dataset, context),
        1,
        data_cfg["num_workers"],
        pin_memory=loaded.device.type == "cuda",
    )
    bad_samples = BadSampleLog()
    confusion = score_split(
        loaded.model,
        loader,
        info.num_classes,
        loaded.device,
        info.ignore_index,
        progress=progress and context.is_main,
        context=context,
        inference=mode,
        bad_samples=bad_samples,
        keep=report_worst,
    )
    skipped = None
    if data_cfg.get("on_bad_sample") == "skip":
        skipped = gather_bad_samples(bad_samples, context).summary()
    lost = skipped or {"skipped": 0, "files": []}
    require_scored_images(split, len(dataset), lost["skipped"], lost["files"])
    return result_of(
        confusion,
        data_cfg,
        split,
        num_images=len(dataset) - lost["skipped"],  # the images actually scored
        inference=mode.describe(),
        source=str(checkpoint),
        model=loaded.model_config["name"],
        bad_samples=skipped,
        layout=loaded.layout.record(),
        seed=loaded.config.get("seed"),
        precision={"backend": backend, "precision": precision},
    )


def score_predictions(
    predictions: str | Path,
    data: Mapping[str, Any],
    split: str | None = None,
    context: DistContext | None = None,
    progress: bool = False,
    report_worst: int = WORST_IMAGES,
) -> EvaluationResult:
    """Score ``predictions/<id>.png`` (class indices at each label's size) against a split of
    ``data`` (a whole data config, ``name`` set), as the VOC devkit does; ``report_worst`` as
    :func:`evaluate` takes it.

    Raises:
        ConfigError: ``data`` does not name a dataset.
        DataError: a prediction is missing or malformed, or the split has no images.
    """
    if data.get("name") is None:
        raise ConfigError("predictions=DIR needs the data to score against: add data=NAME")
    context = context or DistContext()
    split = split or data["val_split"]
    dataset = build_dataset(data, split)
    require_scored_images(split, len(dataset), 0)
    share = shard_indices(len(dataset), context)
    confusion = score_prediction_folder(
        dataset, predictions, share, context, progress and context.is_main, report_worst
    )
    return result_of(
        confusion,
        data,
        split,
        num_images=len(dataset),
        inference={"mode": "predictions"},
        source=str(predictions),
        model="predictions",
    )

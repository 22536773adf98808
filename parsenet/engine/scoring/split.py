"""Whole-image inference over a split into one confusion matrix, the boundary IoU, the per-image
context statistics and the per-image records of the same predictions (all shared between
processes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from parsenet.data.bad_samples import BadSampleLog
from parsenet.engine.runtime.distributed import (
    DistContext,
    all_reduce_sum,
    gather_objects,
    shard_indices,
)
from parsenet.engine.scoring.inference import WHOLE_IMAGE, InferenceMode
from parsenet.errors import DataError
from parsenet.image_scores import WORST_IMAGES, ImageScores
from parsenet.metrics import SplitScores


class SplitShare(Dataset):
    """Some samples of a split, each tagged with its ``index`` in the split and its ``name``
    (the dataset's ``sample_name``, else the index), for the per-image records."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self.indices[position]
        sample = self.dataset[index]
        if "image" not in sample:  # a skipped sample stays what it is
            return sample
        naming = getattr(self.dataset, "sample_name", str)
        return {**sample, "name": naming(index), "index": index}


def shard(dataset: Dataset, context: DistContext) -> SplitShare:
    """This process's share of an evaluation split: every ``world_size``-th image from its rank,
    so each image is counted exactly once (no padding duplicates)."""
    return SplitShare(dataset, shard_indices(len(dataset), context))


def sum_over_processes(scores: SplitScores, context: DistContext | None) -> SplitScores:
    """Sum each process's counts of its shard (confusion matrix, boundary IoU, context
    statistics) into the whole split's, and merge the per-image records, in every process."""
    if context is not None and context.distributed:
        for counter, attribute in (
            (scores.confusion, "matrix"),
            (scores.boundary, "counts"),
            (scores.context, "counts"),
        ):
            summed = all_reduce_sum(getattr(counter, attribute).to(context.device), context)
            setattr(counter, attribute, summed)
        scores.images = ImageScores.merged(gather_objects(scores.images, context))
    return scores


def gather_bad_samples(bad_samples: BadSampleLog, context: DistContext | None) -> BadSampleLog:
    """The skipped samples of every process, merged (every process gets the merged log)."""
    if context is None:
        return bad_samples
    merged = BadSampleLog()
    for counts in gather_objects(dict(bad_samples.counts), context):
        merged.merge(counts)
    return merged


@torch.no_grad()
def score_split(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    ignore_index: int = 255,
    progress: bool = False,
    context: DistContext | None = None,
    inference: InferenceMode | None = None,
    bad_samples: BadSampleLog | None = None,
    keep: int = WORST_IMAGES,
) -> SplitScores:
    """Run the model on every image at its own size and count predictions against labels:
    the confusion matrix and, per image, the context statistics (see
    :class:`~parsenet.metrics.ContextStatistics`).

    ``inference`` chooses whole-image (default), sliding-window or multi-scale + flip
    inference; the prediction always has the label's size.

    The argmax is taken on ``device`` and only the counts are kept, so memory does not grow with
    the split. Under torchrun each process evaluates its :func:`shard` and the counts are summed,
    so every process returns those of the whole split. The model is left in eval
    mode. Samples the dataset skipped (``data.on_bad_sample=skip``) are left out and recorded in
    ``bad_samples``. Batches that carry ``name`` and ``index`` (a :class:`SplitShare`'s) give
    the per-image records their names; with a :class:`SplitShare` the ``keep`` worst images also
    get their pictures (read again from the split, in the main process only).
    """
    model.eval()
    scores = SplitScores(num_classes, ignore_index, keep)
    bad_samples = bad_samples if bad_samples is not None else BadSampleLog()  # logs them at least
    for batch in tqdm(loader, desc="eval", leave=False, disable=None if progress else True):
        bad_samples.record(batch.get("skipped", []))
        if "image" not in batch:
            continue
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        prediction = (inference or WHOLE_IMAGE).scores(model, images).argmax(dim=1)
        indices = batch.get("index")
        scores.update(
            prediction, labels, batch.get("name"), None if indices is None else indices.tolist()
        )
    scores = sum_over_processes(scores, context)
    share = getattr(loader, "dataset", None)
    if isinstance(share, SplitShare) and (context is None or context.is_main):
        scores.images.attach_images(share.dataset.load_image)
    return scores


def require_scored_images(
    split: str, total: int, skipped: int, bad_files: Sequence[str] = ()
) -> None:
    """Raise :class:`DataError` when none of a split's ``total`` images was scored (all
    ``skipped`` as unreadable under ``data.on_bad_sample=skip``, or an empty split): that is
    no score at all, never a score of 0."""
    if total - skipped > 0:
        return
    if total == 0:
        raise DataError(f"split {split} has no images to score; check data.root and the split")
    first = f" (first: {bad_files[0]})" if bad_files else ""
    raise DataError(
        f"split {split}: all {total} images were skipped as unreadable "
        f"(data.on_bad_sample=skip), nothing to score; see bad_samples{first} and fix the files"
    )

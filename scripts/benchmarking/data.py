"""One loader worker's throughput on the VOC pipelines, decoding with Pillow and with the
library's OpenCV reader."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from parsenet.data import build_dataset
from parsenet.data.base import read_image, read_label
from parsenet.data.normalization import get_normalization
from parsenet.data.transforms import PairPipeline, eval_transform, train_transform

from .timing import Step, figure, rates, round_robin

Pairs = list[tuple[Path, Path]]


def voc_pairs(root: Path, split: str, count: int) -> Pairs:
    """The first ``count`` (image, label) paths of a VOC split under ``root``."""
    return build_dataset({"name": "voc", "root": root}, split).pairs[:count]


def decode_pillow(path: Path) -> np.ndarray:
    """RGB uint8 through Pillow (what ``read_image`` falls back to), measured against OpenCV."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


DECODERS: dict[str, Callable[[Path], np.ndarray]] = {
    "pillow": decode_pillow,
    "opencv": read_image,
}


def pipeline_pass(
    pairs: Pairs, decode: Callable[[Path], np.ndarray], transform: PairPipeline
) -> None:
    """What a loader worker does per sample: decode image and label, reseed, transform."""
    for index, (image_path, label_path) in enumerate(pairs):
        transform.reseed(index)
        transform(decode(image_path), read_label(label_path))


def bind_pass(pairs: Pairs, decode: Callable[[Path], np.ndarray], transform: PairPipeline) -> Step:
    """One pass of :func:`pipeline_pass` as a step."""
    return lambda: pipeline_pass(pairs, decode, transform)


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread and no OpenCV threads, as in a DataLoader worker."""
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def measure_data(args: argparse.Namespace) -> dict[str, Any]:
    """Images/s of one worker (one thread, as in a DataLoader worker) per pipeline and decoder,
    and how far the two decoders' pixels differ."""
    pairs = voc_pairs(args.voc, "train", args.voc_images)
    normalization = get_normalization("torchvision")
    pipelines = {f"train {crop}": train_transform(normalization, crop) for crop in args.crops}
    pipelines["eval"] = eval_transform(normalization)
    steps = {
        f"{name} {decoder}": bind_pass(pairs, DECODERS[decoder], transform)
        for name, transform in pipelines.items()
        for decoder in DECODERS
    }
    with one_thread():
        seconds = round_robin(steps, torch.device("cpu"), args.warmup, args.repetitions)
    results = {
        name: figure(rates(len(pairs), values), "images/s per worker")
        for name, values in seconds.items()
    }
    results["decoder agreement"] = decoder_agreement(pairs)
    return results


def decoder_agreement(pairs: Pairs) -> dict[str, Any]:
    """The largest pixel difference between Pillow and OpenCV decoding, and the share of values
    that differ at all."""
    largest, differing, total = 0, 0, 0
    for image_path, _ in pairs:
        difference = np.abs(decode_pillow(image_path).astype(np.int16) - read_image(image_path))
        largest = max(largest, int(difference.max()))
        differing += int(np.count_nonzero(difference))
        total += difference.size
    return {"max_abs_difference": largest, "differing_fraction": differing / total}

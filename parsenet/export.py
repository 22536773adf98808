"""Exporting a trained model to TorchScript or ONNX, with dynamic height and width, and checking
the exported file against the eager model."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from parsenet.config import is_finite_number
from parsenet.errors import ConfigError, ParsenetError
from parsenet.fileio import staged_output
from parsenet.loading import InferenceModel, load_for_inference
from parsenet.onnx_backend import SIDECAR_SUFFIX, example_input, onnxruntime_session, save_onnx
from parsenet.quantization import CalibrationSettings, calibration_set
from parsenet.report import write_json

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
QUANTIZE = ("int8",)
# The share of pixels an export must agree on with the eager model unless min_agreement says:
# float exports on random images; int8 on validation images (see parity_images).
MIN_AGREEMENT = {None: 0.999, "int8": 0.9}
# Validation images an int8 export is checked on (evenly spaced over the split).
INT8_CHECK_IMAGES = 4

Runner = Callable[[torch.Tensor], np.ndarray]


def check_output_path(out: str | Path, fmt: str) -> Path:
    """``out`` as a path that an export can be written to, checked before anything is written.

    Raises:
        ConfigError: ``out`` is a folder, or its folder cannot be created or written into.
    """
    path = Path(out).expanduser()
    if path.is_dir() or str(out).endswith(("/", os.sep)):
        example = path / f"model{FORMATS.get(fmt, '.pt')}"
        raise ConfigError(f"out={out} is a folder; give a file path such as out={example}")
    existing = next(folder for folder in (path.parent, *path.parent.parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(f"out={out}: its folder cannot be created, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"out={out}: {existing} is not writable; choose another out=")
    return path


def check_quantize(fmt: str, quantize: Any) -> None:
    """``quantize`` is None, or ``int8`` with ``format=onnx`` (a :class:`ConfigError` otherwise)."""
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"quantize={quantize!r} must be null or {' or '.join(QUANTIZE)}")
    if quantize is not None and fmt != "onnx":
        raise ConfigError(f"quantize={quantize} needs format=onnx (ONNX Runtime runs it)")


def check_parity_settings(check_sizes: Any, min_agreement: Any) -> list[tuple[int, int]]:
    """``check_sizes`` as (height, width) pairs, once it and ``min_agreement`` are known to be
    usable: at least one pair of whole numbers ≥ 1, and a share of pixels in [0, 1] (or None:
    the default of :data:`MIN_AGREEMENT`).

    Raises:
        ConfigError: naming the key and what it must be (checked before anything is loaded).
    """
    sizes = check_sizes if isinstance(check_sizes, list | tuple) else []
    pairs = [tuple(size) for size in sizes if is_size(size)]
    if not sizes or len(pairs) != len(sizes):
        raise ConfigError(
            f"check_sizes={check_sizes!r} must be a list of [height, width] pairs of whole "
            "numbers ≥ 1, e.g. check_sizes=[[375,500],[512,384]]"
        )
    if min_agreement is not None and (
        not is_finite_number(min_agreement) or not 0 <= min_agreement <= 1
    ):
        raise ConfigError(
            f"min_agreement={min_agreement!r} must be a number between 0 and 1 (the share of "
            "pixels where the export must give the eager model's class)"
        )
    return pairs


def is_size(size: Any) -> bool:
    """True for a (height, width) pair of whole numbers ≥ 1."""
    return (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in size)
    )


def save_torchscript(model: nn.Module, path: Path) -> None:
    """Write ``model`` (in eval mode) traced as TorchScript exactly at ``path``."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks in Python
        torch.jit.save(torch.jit.trace(model.eval(), example_input()), str(path))


SAVERS: dict[str, Callable[[nn.Module, Path], None]] = {
    "torchscript": save_torchscript,
    "onnx": save_onnx,
}
# The files a format may write beside ``<name>``, as suffixes of that name.
COMPANIONS = {"torchscript": [], "onnx": [SIDECAR_SUFFIX]}


@contextmanager
def staged_export(model: nn.Module, fmt: str, path: str | Path) -> Iterator[Path]:
    """Write ``model`` as TorchScript or ONNX (see :func:`parsenet.onnx_backend.save_onnx`) under
    ``path``'s name in a hidden folder beside it and yield that file, to be checked there; when
    the block ends it (with an ONNX sidecar, if any) is renamed into place, and if the block
    fails nothing at ``path`` changes (see :func:`parsenet.fileio.staged_output`)."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not one of {sorted(FORMATS)}")
    with staged_output(path, COMPANIONS[fmt]) as staged:
        SAVERS[fmt](model, staged)
        yield staged


def export_model(model: nn.Module, fmt: str, path: str | Path) -> Path:
    """Write ``model`` to ``path`` as TorchScript or ONNX, unchecked (see :func:`staged_export`)."""
    with staged_export(model, fmt, path):
        pass
    return Path(path)


def load_runner(fmt: str, path: str | Path) -> Runner:
    """A function running the exported file on an N×3×H×W tensor (TorchScript, or ONNX with
    onnxruntime) and returning the logits as a NumPy array."""
    if fmt == "torchscript":
        scripted = torch.jit.load(str(path))

        def run_torchscript(images: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return scripted(images).numpy()

        return run_torchscript
    session = onnxruntime_session(path, "checking an ONNX export")
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images.numpy()})[0]


def random_images(sizes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """One random 1×3×H×W image of each (height, width), the same every time."""
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(1, 3, height, width, generator=generator) for height, width in sizes]


def validation_images(loaded: InferenceModel) -> list[torch.Tensor]:
    """:data:`INT8_CHECK_IMAGES` images of the model's validation split, as it takes them."""
    settings = CalibrationSettings(INT8_CHECK_IMAGES, loaded.data_config["val_split"])
    chosen = calibration_set(loaded.data_config, loaded.normalization, settings, loaded.num_classes)
    return [torch.from_numpy(image) for image in chosen.batches()]


def parity(model: nn.Module, runner: Runner, batches: Sequence[torch.Tensor]) -> list[dict]:
    """Compare the export with the eager model on each 1×3×H×W image: the largest absolute
    logit difference and the share of pixels with the same argmax."""
    results = []
    for images in batches:
        height, width = images.shape[-2:]
        with torch.no_grad():
            expected = model.eval()(images).numpy()
        got = runner(images)
        results.append(
            {
                "size": [int(height), int(width)],
                "max_abs_diff": float(np.abs(got - expected).max()),
                "argmax_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
            }
        )
    return results


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path,
    record: str | Path,
    check_sizes: Sequence[Sequence[int]] = ((375, 500), (512, 384)),
    min_agreement: float | None = None,
    quantize: str | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Export a checkpoint's model to ``out``, check it against the eager model and write
    ``record`` (JSON: parity numbers, the input normalisation the model expects, class names,
    palette). Returns that record.

    A float export is checked on random images of each of ``check_sizes``; ``quantize="int8"``
    (``fmt="onnx"``) writes the statically quantised model (see :mod:`parsenet.quantization`,
    calibrated as ``calibration`` says and cached as ``backend=onnxruntime precision=int8``
    runs it), checked on :data:`INT8_CHECK_IMAGES` validation images instead. ``min_agreement``
    defaults to :data:`MIN_AGREEMENT` of the kind.

    Raises:
        ConfigError: ``out`` is a folder or cannot be written (see :func:`check_output_path`),
            ``check_sizes``, ``min_agreement`` or ``quantize`` is unusable (see
            :func:`check_parity_settings`, :func:`check_quantize`); nothing is loaded or
            written then.
        ParsenetError: the export agrees on fewer than ``min_agreement`` of the pixels (it is
            not kept; what was at ``out`` stays as it was).
    """
    sizes = check_parity_settings(check_sizes, min_agreement)
    check_quantize(fmt, quantize)
    settings = CalibrationSettings.from_config(calibration)
    required = MIN_AGREEMENT[quantize] if min_agreement is None else min_agreement
    out = check_output_path(out, fmt)
    loaded = load_for_inference(checkpoint, "cpu", channels_last=False)  # traced as NCHW
    if quantize is None:
        staging, images = staged_export(loaded.model, fmt, out), random_images(sizes)
    else:
        quantized = load_for_inference(
            checkpoint, backend="onnxruntime", precision=quantize, calibration=calibration
        )
        staging, images = staged_copy(quantized.model.path, out), validation_images(loaded)
    with staging as staged:  # checked under its final name
        results = parity(loaded.model, load_runner(fmt, staged), images)
        worst = min(result["argmax_agreement"] for result in results)
        if worst < required:
            raise ParsenetError(
                f"the {quantize or fmt} export agrees with the eager model on only "
                f"{100 * worst:.3f} % of pixels (min_agreement={required}); it was not kept, "
                f"out={out} is unchanged"
            )
    norm = loaded.normalization
    about = {
        "file": str(out),
        "format": fmt,
        "checkpoint": str(checkpoint),
        "input": "N×3×H×W float32, any H and W; output N×K×H×W logits",
        "input_norm": {
            "name": norm.name,
            "channel_order": norm.channel_order,
            "pixel_scale": norm.pixel_scale,
            "mean": list(norm.mean),
            "std": list(norm.std),
        },
        "class_names": loaded.class_names,
        "palette": loaded.palette,
        "parity": results,
    }
    if quantize is not None:
        about["quantize"] = {
            "precision": quantize,
            "calibration": {"images": settings.images, "split": settings.split},
            "checked_on": f"{len(images)} images of {loaded.data_config['val_split']}",
        }
    write_json(record, about)
    return about


@contextmanager
def staged_copy(source: Path, path: Path) -> Iterator[Path]:
    """``source`` copied under ``path``'s name in a hidden folder beside it, yielded to be
    checked there and renamed into place when the block ends (see :func:`staged_export`)."""
    with staged_output(path) as staged:
        shutil.copyfile(source, staged)
        yield staged

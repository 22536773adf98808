"""A trained model ready to use: :func:`load_for_inference` and :func:`predict`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parsenet.data import dataset_info
from parsenet.data.normalization import InputNormalization, get_normalization
from parsenet.engine.runtime.checkpoint import load_checkpoint, restore_model
from parsenet.engine.runtime.cpu_features import require_bf16, warn_int8_without_vnni
from parsenet.engine.runtime.memory_format import (
    INFERENCE_SHAPE,
    LayoutChoice,
    choose_memory_format,
    layout_setting,
)
from parsenet.engine.runtime.precision import AutocastModel, check_inference_precision
from parsenet.engine.runtime.process import resolve_device
from parsenet.engine.scoring.inference import WHOLE_IMAGE, InferenceMode
from parsenet.errors import ConfigError, DataError
from parsenet.models.pretrained import choose_input_norm
from parsenet.onnx_backend import OnnxRuntimeModel, cached_onnx_export
from parsenet.quantization import CalibrationSettings, cached_int8_export, calibration_set

ValueRange = tuple[float, float]  # what the pixel values of a non-uint8 image span


def lay_over(
    base: Mapping[str, Any], overrides: Mapping[str, Any], where: str = ""
) -> dict[str, Any]:
    """``base`` with the non-null values of ``overrides`` laid over it, nested nodes merged key
    by key; a key ``base`` does not have is a :class:`ConfigError` (a misspelt override)."""
    merged = dict(base)
    for key, value in overrides.items():
        if key not in base:
            choices = ", ".join(sorted(base))
            raise ConfigError(f"{where}{key} is not a key of the checkpoint's config ({choices})")
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            merged[key] = lay_over(base[key], value, f"{where}{key}.")
        elif value is not None:
            merged[key] = value
    return merged


def model_config(trained: Mapping[str, Any], chosen: Mapping[str, Any] | None) -> dict[str, Any]:
    """The checkpoint's model config with the caller's keys laid over it; a config that names
    itself (``name`` set, e.g. ``model=fcn``) replaces it."""
    if chosen and chosen.get("name") is not None:
        return dict(chosen)
    return lay_over(trained, chosen or {}, "model.")


def data_config(trained: Mapping[str, Any], chosen: Mapping[str, Any] | None) -> dict[str, Any]:
    """The data to use: a config that names itself (``data=voc …``) as it is, else the
    checkpoint's data config with the caller's keys laid over it, where a class file that sat
    in the training root (``classes.yaml`` of ``data=folder``) moves with a new ``root``."""
    chosen = chosen or {}
    if chosen.get("name") is not None:
        return dict(chosen)
    merged = lay_over(trained, chosen, "data.")
    classes, root = trained.get("classes"), trained.get("root")
    moved = chosen.get("root") and not chosen.get("classes")
    if moved and classes and root and Path(classes).parent == Path(root):
        merged["classes"] = str(Path(chosen["root"]) / Path(classes).name)
    return merged


@dataclass
class InferenceModel:
    """A checkpoint's model on a device, with what it takes to use it.

    Attributes:
        model: the network in eval mode.
        device: where it runs.
        normalization: the input convention its weights were trained with.
        class_names, palette, ignore_index: of the dataset it was trained on.
        model_config: the model's config (the checkpoint's, with the caller's keys over it).
        data_config: that dataset's config (likewise).
        config: the checkpoint's whole training config.
        checkpoint: the file it came from.
        layout: the memory layout the model runs in and how it was chosen.
    """

    model: torch.nn.Module
    device: torch.device
    normalization: InputNormalization
    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int
    model_config: dict[str, Any]
    data_config: dict[str, Any]
    config: dict[str, Any]
    checkpoint: Path
    layout: LayoutChoice = LayoutChoice("contiguous", False, "setting")

    @property
    def num_classes(self) -> int:
        """How many classes the model predicts."""
        return len(self.class_names)

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of the model's weights, and of the images given to it."""
        return self.layout.memory_format


def load_for_inference(
    checkpoint: str | Path,
    device: str | torch.device = "auto",
    model: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    channels_last: bool | str = "auto",
    backend: str = "torch",
    precision: str = "fp32",
    calibration: Mapping[str, Any] | None = None,
) -> InferenceModel:
    """Load a parsenet checkpoint for evaluation or prediction.

    Args:
        checkpoint: a ``.pt`` file written by training (or ``parsenet-convert``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or a device.
        model: model config keys that replace the checkpoint's (they must fit its weights), or
            a whole model config with ``name`` set.
        data: data config keys that replace the checkpoint's (e.g. ``{"root": "/datasets"}``), or
            a whole data config with ``name`` set; its classes must be the model's.
        channels_last: the memory layout: ``auto`` (the faster one on this machine for this model
            at 500×375 in inference, measured once and cached, see
            :mod:`parsenet.engine.runtime.memory_format`),
            True (NHWC) or False (NCHW).
        backend: ``torch``, or ``onnxruntime``: the model exported to ONNX (once, cached beside
            the layout cache) and run by ONNX Runtime on the CPU (``pip install onnxruntime
            onnxscript``); the same labels, faster on some CPUs (docs/benchmarks.md).
        precision: ``fp32``; with ``backend=torch`` also ``bf16`` (autocast on a CPU with bf16
            instructions, see :mod:`parsenet.engine.runtime.cpu_features`, or on a GPU); with
            ``backend=onnxruntime`` also ``int8``: the ONNX export statically quantised (see
            :mod:`parsenet.quantization`), calibrated once on training images and cached.
        calibration: ``int8``'s calibration settings, as the ``calibration`` config node
            (``{"images": 32, "split": None}``: see
            :class:`~parsenet.quantization.CalibrationSettings`).

    Raises:
        CheckpointError: the file is missing, damaged, not a parsenet checkpoint, or does not
            fit the model or data asked for.
        ConfigError: a key that the checkpoint's config does not have, a bad device, a bad
            ``channels_last``, ``backend``, ``precision`` or ``calibration``, ``onnxruntime``
            on a GPU or not installed, or ``bf16`` on a CPU without bf16 instructions.
        DataError: ``int8``'s calibration split is missing or empty.
    """
    check_inference_precision(backend, precision)
    settings = CalibrationSettings.from_config(calibration)
    if backend == "onnxruntime" and device == "auto":
        device = "cpu"  # ONNX Runtime's CPU provider
    path = Path(checkpoint).expanduser()
    saved = load_checkpoint(path)
    trained = saved["config"]
    target = device if isinstance(device, torch.device) else resolve_device(device)
    model_cfg = model_config(trained["model"], model)
    data_cfg = data_config(trained["data"], data)
    info = dataset_info(data_cfg)
    if precision == "bf16" and target.type == "cpu":
        require_bf16()
    network = restore_model(saved, path, model_cfg, info.num_classes).eval()
    input_norm = choose_input_norm(model_cfg.get("input_norm"), trained["model"]["input_norm"])
    normalization = get_normalization(input_norm)
    if backend == "onnxruntime":
        if target.type != "cpu":
            raise ConfigError(f"backend=onnxruntime runs on the CPU, not {target}; add device=cpu")
        if precision == "int8":
            warn_int8_without_vnni()
            images = calibration_set(data_cfg, normalization, settings, info.num_classes)
            exported = cached_int8_export(network, path, model_cfg, images)
        else:
            exported = cached_onnx_export(network, path, model_cfg)
        setting = layout_setting("channels_last", channels_last)
        network = OnnxRuntimeModel(exported)
        layout = LayoutChoice("contiguous", setting, "onnxruntime")
    else:
        layout = choose_memory_format(network, target, INFERENCE_SHAPE, channels_last)
        network = network.to(target, memory_format=layout.memory_format)
        if precision == "bf16":
            network = AutocastModel(network, torch.bfloat16)
    return InferenceModel(
        model=network,
        device=target,
        normalization=normalization,
        class_names=list(saved["dataset"]["class_names"]),
        palette=[list(colour) for colour in saved["dataset"]["palette"]],
        ignore_index=info.ignore_index,
        model_config=model_cfg,
        data_config=data_cfg,
        config=trained,
        checkpoint=path,
        layout=layout,
    )


def layout_problem(shape: tuple[int, ...]) -> str | None:
    """What is wrong with an image array of ``shape`` for :func:`predict`, with the fix; None
    for a non-empty H×W×3 array."""
    if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
        return "greyscale; repeat it into RGB: np.dstack([image] * 3)"
    if len(shape) == 3 and shape[2] == 4:
        return "RGBA; drop the alpha channel: image[..., :3]"
    if len(shape) == 3 and shape[0] in (1, 3) and shape[2] not in (1, 3):
        return "channels-first (C×H×W); move the channels last: image.transpose(1, 2, 0)"
    if len(shape) != 3 or shape[2] != 3:
        return "not an H×W×3 RGB array"
    if not shape[0] or not shape[1]:
        return "empty (no pixels)"
    return None


def as_rgb_uint8(image: Any, value_range: ValueRange | None = None) -> np.ndarray:
    """``image`` as the H×W×3 RGB uint8 array the model takes (see :func:`predict` for what is
    accepted and how ``value_range`` converts other dtypes).

    Raises:
        DataError: one line naming the shape, dtype or values given, what is expected and how
            to convert it.
        ConfigError: ``value_range`` is not two finite numbers, low below high.
    """
    array = np.asarray(image)
    shape = "×".join(map(str, array.shape)) or "scalar"
    problem = layout_problem(array.shape)
    if problem is not None:
        raise DataError(f"predict takes an H×W×3 RGB image; this one ({shape}) is {problem}")
    if value_range is None and array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.floating):
        raise DataError(
            f"image dtype {array.dtype} is not taken: pass uint8 RGB, or integers or floats with "
            "value_range=(low, high)"
        )
    if value_range is None:
        raise DataError(
            f"a {array.dtype} image needs its range: pass value_range=(0, 1) for floats in "
            "[0, 1] (scikit-image, torchvision), (0, 255) for 0–255 values, (0, 65535) for "
            "16 bits, or a uint8 image"
        )
    low, high = checked_range(value_range)
    values = array.astype(np.float64)
    finite = bool(np.isfinite(values).all())
    if not finite or values.min() < low or values.max() > high:
        held = f"{values.min():g}…{values.max():g}" if finite else "NaN or infinity"
        raise DataError(
            f"a {array.dtype} image with value_range=({low:g}, {high:g}) must hold finite values "
            f"in that range; this one holds {held}"
        )
    return np.rint((values - low) * (255 / (high - low))).astype(np.uint8)


def checked_range(value_range: Any) -> tuple[float, float]:
    """``value_range`` as (low, high) once it is two finite numbers with low below high."""
    pair = tuple(value_range) if isinstance(value_range, list | tuple) else ()
    if len(pair) != 2 or not all(map(is_finite_real, pair)) or not pair[0] < pair[1]:
        raise ConfigError(
            f"value_range={value_range!r} must be two finite numbers, low below high, e.g. (0, 1)"
        )
    return float(pair[0]), float(pair[1])


def is_finite_real(value: Any) -> bool:
    """True for a finite real number (a NumPy scalar too), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


@torch.inference_mode()
def predict_batch(
    loaded: InferenceModel,
    images: Sequence[np.ndarray],
    mode: InferenceMode = WHOLE_IMAGE,
    value_range: ValueRange | None = None,
) -> np.ndarray:
    """Label maps (N×H×W class indices, uint8 up to 256 classes) for RGB images of one size
    H×W×3 (each as :func:`predict` takes it, ``value_range`` too), each segmented at its own
    size (never resized or padded, which would change the context)."""
    images = [as_rgb_uint8(image, value_range) for image in images]
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise DataError(f"images of one batch must have one size, got shapes {sorted(shapes)}")
    batch = torch.stack([loaded.normalization(image) for image in images]).to(loaded.device)
    batch = batch.contiguous(memory_format=loaded.memory_format)
    labels = mode.scores(loaded.model, batch).argmax(dim=1).cpu().numpy()
    return labels.astype(np.uint8 if loaded.num_classes <= 256 else np.int32)


def predict(
    loaded: InferenceModel,
    image: np.ndarray,
    mode: InferenceMode = WHOLE_IMAGE,
    value_range: ValueRange | None = None,
) -> np.ndarray:
    """The label map (H×W class indices, see :func:`predict_batch`) of one RGB image of any
    size.

    The image is an H×W×3 array in RGB order, uint8 (what image files decode to). Another
    dtype is taken only with ``value_range=(low, high)``, the values its pixels span, mapped
    onto 0–255 as ``round(255 · (value − low) / (high − low))``: ``(0, 1)`` for floats in
    [0, 1] (scikit-image, torchvision; a uint8 image divided by 255 gives exactly the uint8
    result), ``(0, 255)`` for 0–255 floats, ``(0, 65535)`` for 16 bits. Anything else is a
    :class:`~parsenet.errors.DataError` saying how to convert it: another dtype without
    ``value_range``, values outside it or NaN, greyscale (H×W), RGBA, channels-first (3×H×W)
    and empty arrays.

    ``mode`` is whole-image inference by default; ``InferenceMode("slide", crop, stride)`` or
    ``InferenceMode("msflip", scales=…, flip=…)`` as in ``parsenet-eval``.
    """
    return predict_batch(loaded, [image], mode, value_range)[0]

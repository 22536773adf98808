"""Static int8 quantisation of an ONNX export with ONNX Runtime: QDQ format, weights per output
channel, activations calibrated (min/max) on training images passed through the evaluation
transform.

What stays float32 (:func:`float_nodes`), and why:

- **every node of an L2Norm layer** (its square, channel sum, root, division and the learned
  scale γ): a norm taken over 8-bit values, then multiplied by γ ≈ 10 or more, would scale their
  rounding error by the same factor, and the normalised values of each tap differ by orders of
  magnitude from the raw features the calibration sees beside them;
- **the global pooling and everything computed on the pooled 1×1 vector** until it is broadcast
  back over the image (ParseNet's context: pooling, its L2Norm, its classifier; MobileNetV3's
  squeeze-excitation vectors): a few hundred numbers per image, so float costs nothing, while an
  error there is spread over every pixel;
- **the final upsampling** (bilinear resize or the per-class deconvolution) to the input size:
  the class scores that the argmax compares are kept at float precision; the argmax itself is
  taken outside the model, in float.

Calibration is deterministic: the same images in the same order give a byte-identical model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from parsenet.data import build_dataset, dataset_info
from parsenet.data.base import SegmentationDataset
from parsenet.data.normalization import InputNormalization
from parsenet.data.transforms import eval_transform
from parsenet.engine.runtime.cpu_features import has_vnni
from parsenet.errors import ConfigError
from parsenet.fileio import staged_output
from parsenet.onnx_backend import cached_file, cached_onnx_export

# The modules whose every node stays float, by the class names torch's exporter records in a
# node's ``namespace`` metadata.
FLOAT_MODULES = {
    "parsenet.models.l2norm.L2Norm": "L2Norm (norm and scale)",
    "parsenet.models.upsample": "final upsampling",
}
GLOBAL_POOLING = ("ReduceMean", "GlobalAveragePool")
# The output resize of bilinear upsampling sits in the network's own forward, not in a module.
TOP_LEVEL_RESIZE = "Resize"


@dataclass(frozen=True)
class CalibrationSettings:
    """``calibration.*``: how many training images calibrate int8 activations, from which split.

    Attributes:
        images: how many images (evenly spaced over the split, in its order).
        split: the split to take them from; None: the data's ``train_split``.
    """

    images: int = 32
    split: str | None = None

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> CalibrationSettings:
        """The settings of a ``calibration`` config node, checked.

        Raises:
            ConfigError: an unknown key, or ``images`` not a whole number ≥ 1 (an empty
                calibration set).
        """
        node = dict(node or {})
        unknown = sorted(set(node) - set(cls.__dataclass_fields__))
        if unknown:
            known = ", ".join(cls.__dataclass_fields__)
            raise ConfigError(f"calibration.{unknown[0]} is not a calibration key ({known})")
        settings = cls(**node)
        images = settings.images
        if isinstance(images, bool) or not isinstance(images, int) or images < 1:
            raise ConfigError(
                f"calibration.images={images!r} must be a whole number ≥ 1: int8 activations "
                "are calibrated on that many training images"
            )
        return settings


@dataclass(frozen=True)
class CalibrationSet:
    """The images int8 is calibrated on: a split of a dataset and the chosen indices."""

    dataset: SegmentationDataset
    split: str
    indices: tuple[int, ...]

    def identity(self) -> dict[str, Any]:
        """What the calibrated model depends on: dataset, split and the images in order."""
        return {
            "dataset": self.dataset.info.name,
            "split": self.split,
            "images": [str(self.dataset.pairs[index][0]) for index in self.indices],
        }

    def batches(self) -> Iterator[np.ndarray]:
        """Each image as the model takes it: 1×3×H×W float32, through the evaluation
        transform, at its own size."""
        for index in self.indices:
            yield self.dataset[index]["image"].unsqueeze(0).numpy()


def calibration_set(
    data_cfg: Mapping[str, Any],
    normalization: InputNormalization,
    settings: CalibrationSettings,
    num_classes: int,
) -> CalibrationSet:
    """The calibration images of ``data_cfg`` for a model of ``num_classes`` classes.

    Raises:
        ConfigError: the data has another class count than the model.
        DataError: the split is missing or lists no images (the dataset's own one line).
    """
    info = dataset_info(data_cfg)
    if info.num_classes != num_classes:
        raise ConfigError(
            f"calibration data {info.name} has {info.num_classes} classes but the checkpoint's "
            f"model predicts {num_classes}; calibrate on data with the model's classes"
        )
    split = settings.split or data_cfg["train_split"]
    dataset = build_dataset(data_cfg, split, eval_transform(normalization))
    count = min(settings.images, len(dataset))
    indices = np.unique(np.rint(np.linspace(0, len(dataset) - 1, count)).astype(int))
    return CalibrationSet(dataset, split, tuple(int(index) for index in indices))


def float_nodes(model: Any) -> dict[str, str]:
    """The names of the nodes of an exported ``onnx.ModelProto`` that stay float, each with its
    reason (see the module's docstring): nodes of L2Norm and upsampling modules, the output
    resize, global pooling and every node fed only by pooled values (and constants)."""
    graph = model.graph
    constants = {tensor.name for tensor in graph.initializer}
    constants |= {
        output for node in graph.node if node.op_type == "Constant" for output in node.output
    }
    pooled: set[str] = set()
    kept = {}
    for node in graph.node:  # in topological order
        namespace = next(
            (prop.value for prop in node.metadata_props if prop.key == "namespace"), ""
        )
        inputs = [name for name in node.input if name and name not in constants]
        if not inputs:  # computed from constants alone (a reshaped γ): a constant too
            constants.update(node.output)
            continue
        module = next((why for key, why in FLOAT_MODULES.items() if key in namespace), None)
        on_pooled = all(name in pooled for name in inputs)
        if node.op_type in GLOBAL_POOLING or on_pooled:
            pooled.update(node.output)
        if module is not None:
            kept[node.name] = module
        elif node.op_type in GLOBAL_POOLING:
            kept[node.name] = "global pooling"
        elif on_pooled:
            kept[node.name] = "on the pooled vector"
        elif node.op_type == TOP_LEVEL_RESIZE and namespace.count("/") <= 1:
            kept[node.name] = "final upsampling"
    return kept


class WithoutAdvice(logging.Filter):
    """Drops ONNX Runtime's advice to pre-process the model, logged on the root logger at every
    quantisation: the exporter has already folded BatchNorm into the convolutions, and the
    pre-processing's optimisation would rename the nodes :func:`float_nodes` names."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def without_advice() -> Iterator[None]:
    """The root logger with :class:`WithoutAdvice` on it, for the block."""
    advice = WithoutAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


class CalibrationReader:
    """ONNX Runtime's calibration data reader over a list of images (``get_next`` and
    ``rewind``, as :class:`onnxruntime.quantization.CalibrationDataReader` asks)."""

    def __init__(self, input_name: str, images: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.images = list(images)
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next image as the model's input, or None after the last."""
        if self.position >= len(self.images):
            return None
        self.position += 1
        return {self.input_name: self.images[self.position - 1]}

    def rewind(self) -> None:
        """Start again from the first image."""
        self.position = 0


def quantize_int8(
    float_model: Path, out: Path, images: Sequence[np.ndarray], reduce_range: bool
) -> dict[str, str]:
    """Write the int8 (QDQ) model of the float ONNX file ``float_model`` at ``out``, its
    activations calibrated (min/max) on ``images`` in that order; ``reduce_range``: 7-bit
    weights, for CPUs without int8 dot products (see
    :mod:`parsenet.engine.runtime.cpu_features`). Returns the nodes kept float, with reasons."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(float_model))
    kept = float_nodes(model)
    reader = CalibrationReader(model.graph.input[0].name, images)
    CalibrationDataReader.register(CalibrationReader)
    with without_advice():
        quantize_static(
            str(float_model),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(kept),
        )
    return kept


def cached_int8_export(
    model: nn.Module,
    checkpoint: Path,
    model_cfg: dict[str, Any],
    calibration: CalibrationSet,
) -> Path:
    """The int8 model of a checkpoint, quantised once from its cached float export (see
    :func:`parsenet.onnx_backend.cached_onnx_export`) and reused while the checkpoint, its model
    config, the calibration images, the weight range (``reduce_range``, from this CPU's int8
    instructions) and the torch and ONNX Runtime versions stay the same."""
    import onnxruntime

    reduce_range = not has_vnni()
    float_model = cached_onnx_export(model, checkpoint, model_cfg)
    identity = [model_cfg, calibration.identity(), reduce_range, onnxruntime.__version__]
    path = cached_file(checkpoint, identity, ".int8.onnx")
    if not path.is_file():
        with staged_output(path) as staged:
            quantize_int8(float_model, staged, list(calibration.batches()), reduce_range)
    return path

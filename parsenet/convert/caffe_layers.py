"""The original Caffe models' layers mapped by name onto parsenet's parameters, every shape checked.

Two targets (``arch``):

- ``parsenet_voc``: the released ParseNet (``VGG_VOC2012ext.caffemodel``, gist 45e9e8de2c13af6476ca)
  → a whole :class:`~parsenet.models.parsenet.SegmentationNet` as ``configs/model/parsenet.yaml``
  builds it: the trunk ``conv1_1`` … ``fc7``, ``fc7_norm`` and ``pool6_1x1_norm`` (Normalize, one
  blob of per-channel scales), ``fc7_norm_score21`` and ``pool6_1x1_norm_score21`` (1×1 scores),
  ``upscore21`` (per-class deconvolution 16/8/4);
- ``reduced_vgg16``: the fc-reduced VGG16 (``VGG_ILSVRC_16_layers_fc_reduced.caffemodel``) → the
  reduced trunk ``conv1_1`` … ``fc7``, written with the SSD ports' keys (``0.weight`` …
  ``33.weight``) that ``model.backbone.pretrained=PATH`` reads as Caffe-convention weights.

Caffe keeps a layer's weight then its bias; a layer saved with ``bias_term: false`` (one blob)
gets a zero bias, which computes the same. Caffe's legacy 4-D blobs store vectors as 1×1×1×N, so
shapes are compared without their leading 1s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from parsenet.convert.caffe_proto import CaffeLayer, CaffeModelError, CaffeNet
from parsenet.data import dataset_info
from parsenet.models import build_model
from parsenet.models.pretrained import REDUCED_FC_INDICES, VGG16_CONV_INDICES
from parsenet.models.vgg import VGGTrunk


@dataclass(frozen=True)
class CaffeRelease:
    """A published Caffe model a target is made for: its file name and SHA-1."""

    file: str
    sha1: str


RELEASES = {
    "parsenet_voc": CaffeRelease(
        "VGG_VOC2012ext.caffemodel", "99cc76c373dc522fd70f80208b30a43ab2fba2f6"
    ),
    "reduced_vgg16": CaffeRelease(
        "VGG_ILSVRC_16_layers_fc_reduced.caffemodel", "97eb7c469c5097f51a0f9a944f4a5731f470eee2"
    ),
}
# The released ParseNet's layers beyond the trunk (VGG_VOC2012ext.prototxt) → our modules.
PARSENET_HEAD_LAYERS = {
    "fc7_norm": "head.norms.fc7",
    "pool6_1x1_norm": "head.norms.pool6_1x1",
    "fc7_norm_score21": "head.scores.fc7",
    "pool6_1x1_norm_score21": "head.scores.pool6_1x1",
    "upscore21": "upsample.deconv",
}
ARCHS = tuple(RELEASES)


@dataclass
class LoadReport:
    """What a conversion used and what it left out.

    Attributes:
        layers: Caffe layers copied, in network order.
        unused: Caffe layers with weights that the target has no place for (e.g. ``fc8``).
        zero_biases: Caffe layers saved without a bias whose bias was set to zero.
    """

    layers: list[str] = field(default_factory=list)
    unused: list[CaffeLayer] = field(default_factory=list)
    zero_biases: list[str] = field(default_factory=list)


def format_shape(shape: tuple[int, ...] | torch.Size) -> str:
    """``1024×512×3×3`` (``scalar`` for no dimensions)."""
    return "×".join(str(size) for size in shape) or "scalar"


def without_leading_ones(shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    """The shape with its leading 1s dropped (legacy Caffe 1×1×1×N vectors compare as N)."""
    dims = list(shape)
    while dims and dims[0] == 1:
        dims.pop(0)
    return tuple(dims)


def detect_arch(net: CaffeNet) -> str:
    """``parsenet_voc`` when the file has the released ParseNet's score layers, else
    ``reduced_vgg16``."""
    present = net.weighted_layers()
    return (
        "parsenet_voc" if any(name in present for name in PARSENET_HEAD_LAYERS) else "reduced_vgg16"
    )


def load_caffe_weights(
    module: nn.Module, layer_modules: Mapping[str, str], net: CaffeNet, arch: str, source: str
) -> LoadReport:
    """Copy each Caffe layer's blobs into the parameters of the submodule it maps to.

    Args:
        module: the model to fill (every parameter and buffer must be covered).
        layer_modules: Caffe layer name → our submodule's name, in network order.
        net: the read ``.caffemodel``.
        arch: the target's name, for messages.
        source: the file's path, for messages.

    Raises:
        CaffeModelError: a parameter of ``module`` has no Caffe layer, or a layer is missing,
            has the wrong number of blobs or a wrong shape.
    """
    state = module.state_dict()
    keys_of = {
        layer: [key for key in state if key.rsplit(".", 1)[0] == prefix]
        for layer, prefix in layer_modules.items()
    }
    unfilled = sorted(set(state) - {key for keys in keys_of.values() for key in keys})
    if unfilled:
        raise CaffeModelError(
            f"--arch {arch}: no Caffe layer maps to {', '.join(unfilled)}; the model config does "
            "not match the Caffe net"
        )
    present = net.weighted_layers()
    missing = [layer for layer in layer_modules if layer not in present]
    if missing:
        release = RELEASES[arch].file
        raise CaffeModelError(
            f"{source} has no layer {', '.join(missing)} of the {arch} net (it has "
            f"{', '.join(present)}); is it {release}? --arch parsenet_voc fits "
            f"{RELEASES['parsenet_voc'].file}, --arch reduced_vgg16 "
            f"{RELEASES['reduced_vgg16'].file}"
        )
    report = LoadReport()
    converted: dict[str, torch.Tensor] = {}
    for layer, keys in keys_of.items():
        blobs = present[layer].blobs
        bias_dropped = len(blobs) == len(keys) - 1 and keys[-1].endswith(".bias")
        if len(blobs) != len(keys) and not bias_dropped:
            raise CaffeModelError(
                f"{source}: layer {layer} has {len(blobs)} blobs, the {arch} net needs "
                f"{len(keys)} ({', '.join(key.rsplit('.', 1)[1] for key in keys)})"
            )
        for index, (key, blob) in enumerate(zip(keys, blobs, strict=False)):  # bias may be absent
            ours = state[key].shape
            if without_leading_ones(blob.shape) != without_leading_ones(ours):
                raise CaffeModelError(
                    f"{source}: layer {layer} blob {index} has shape {format_shape(blob.shape)}, "
                    f"the {arch} net needs {format_shape(ours)}; is it {RELEASES[arch].file}?"
                )
            converted[key] = torch.from_numpy(np.ascontiguousarray(blob)).reshape(ours)
        if bias_dropped:
            converted[keys[-1]] = torch.zeros_like(state[keys[-1]])
            report.zero_biases.append(layer)
        report.layers.append(layer)
    module.load_state_dict(converted)
    report.unused = [layer for name, layer in present.items() if name not in layer_modules]
    return report


def trunk_layers(trunk: VGGTrunk, prefix: str) -> dict[str, str]:
    """The trunk's convolutions (``conv1_1`` … ``fc7``, Caffe's names) → their module names."""
    return {name: f"{prefix}layers.{name}" for name in trunk.convolutions()}


def conversion_record(net: CaffeNet, arch: str, source: str) -> dict[str, Any]:
    """What a converted file records about its origin."""
    return {
        "format": "caffe",
        "file": Path(source).name,
        "net": net.name,
        "sha1": net.sha1,
        "arch": arch,
        "released": net.sha1 == RELEASES[arch].sha1,
    }


def parsenet_voc_checkpoint(
    net: CaffeNet, cfg: dict[str, Any], source: str
) -> tuple[dict[str, Any], LoadReport]:
    """The released ParseNet as a parsenet checkpoint (weights only; no optimiser state).

    Args:
        net: the read ``VGG_VOC2012ext.caffemodel``.
        cfg: the resolved training config of the released-model row (``model.input_norm`` set to
            ``caffe``), stored in the checkpoint so ``parsenet-eval`` and ``parsenet-predict``
            rebuild the same model and normalise inputs the Caffe way.
        source: the file's path, for messages and the record.

    Returns:
        The checkpoint's content (for
        :func:`~parsenet.engine.runtime.checkpoint.save_checkpoint`) and the report.
    """
    info = dataset_info(cfg["data"])
    model = build_model(cfg["model"], info.num_classes)
    layers = {**trunk_layers(model.backbone, "backbone."), **PARSENET_HEAD_LAYERS}
    report = load_caffe_weights(model, layers, net, "parsenet_voc", source)
    checkpoint = {
        "model": model.state_dict(),
        "config": cfg,
        "dataset": info.to_dict(),
        "iteration": 0,  # parsenet has not trained it
        "converted_from": conversion_record(net, "parsenet_voc", source),
    }
    return checkpoint, report


def reduced_vgg16_state(net: CaffeNet, source: str) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The fc-reduced VGG16 trunk as a ``vgg16_reducedfc.pth``-style state dict (keys
    ``0.weight`` … ``33.bias``), which ``model.backbone.pretrained=PATH`` reads as Caffe-convention
    weights."""
    trunk = VGGTrunk("reduced_vgg16")
    report = load_caffe_weights(trunk, trunk_layers(trunk, ""), net, "reduced_vgg16", source)
    indices = {**VGG16_CONV_INDICES, **REDUCED_FC_INDICES}
    state: dict[str, torch.Tensor] = {}
    for name, conv in trunk.convolutions().items():
        state[f"{indices[name]}.weight"] = conv.weight.detach().clone()
        state[f"{indices[name]}.bias"] = conv.bias.detach().clone()
    return state, report

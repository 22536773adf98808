"""Weights from other frameworks: the original Caffe models (``parsenet-convert caffe``)."""

from parsenet.convert.caffe_layers import (
    ARCHS,
    RELEASES,
    detect_arch,
    parsenet_voc_checkpoint,
    reduced_vgg16_state,
)
from parsenet.convert.caffe_proto import CaffeModelError, read_caffemodel

__all__ = [
    "ARCHS",
    "RELEASES",
    "CaffeModelError",
    "detect_arch",
    "parsenet_voc_checkpoint",
    "read_caffemodel",
    "reduced_vgg16_state",
]

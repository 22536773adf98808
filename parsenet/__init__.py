"""ParseNet: VGG16 fully convolutional networks with global context (Liu, Rabinovich, Berg 2015).

The Python API (imported on first use, so ``import parsenet`` stays light):

- :func:`load_for_inference` — a checkpoint's model on a device, with its input normalisation,
  class names, palette and data config;
- :func:`predict` — the label map of one image (numpy in, numpy out, any size);
- :func:`evaluate` — a checkpoint's scores on a split (an :class:`EvaluationResult`);
- :func:`train` — train as a composed config describes (:func:`compose` builds one).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

PUBLIC = {
    "compose": "parsenet.config",
    "load_for_inference": "parsenet.loading",
    "InferenceModel": "parsenet.loading",
    "predict": "parsenet.loading",
    "evaluate": "parsenet.evaluation",
    "score_predictions": "parsenet.evaluation",
    "EvaluationResult": "parsenet.evaluation",
    "InferenceMode": "parsenet.engine.scoring.inference",
    "train": "parsenet.training",
}
__all__ = sorted(PUBLIC)


def __getattr__(name: str) -> Any:
    if name in PUBLIC:
        return getattr(import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'parsenet' has no attribute {name!r}")

"""What every part shares: the composed training config and the device, precision and layout."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parsenet.config import compose
from parsenet.engine.precision import Precision
from parsenet.models.pretrained import choose_input_norm

REPO = Path(__file__).resolve().parents[2]


def train_config(args: argparse.Namespace) -> dict[str, Any]:
    """The real ``configs/train.yaml`` with the benchmark's settings, as plain containers."""
    overrides = [
        f"data={args.data}",
        f"device={args.device}",
        f"model.backbone.width_mult={args.width}",
        f"train.batch_size={args.batch}",
        f"train.amp={args.amp}",
        f"train.channels_last={str(args.channels_last).lower()}",
        f"train.compile={str(args.compile).lower()}",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.keep_snapshots=0",
        *args.override,
    ]
    resolved = compose("train", overrides)
    model_cfg = resolved["model"]
    model_cfg["input_norm"] = choose_input_norm(model_cfg["input_norm"], None)  # random weights
    return resolved


class Setup:
    """Device, precision (:class:`~parsenet.engine.precision.Precision`, as the trainer's) and
    layout shared by every measurement."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.precision = Precision(args.amp, self.device)
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.compile = args.compile

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model on the device, in the layout, compiled if asked."""
        model = model.to(self.device, memory_format=self.memory_format)
        return torch.compile(model) if self.compile else model

    def images(self, batch: int, height: int, width: int) -> torch.Tensor:
        """A random input batch on the device, in the layout."""
        images = torch.randn(batch, 3, height, width, device=self.device)
        return images.contiguous(memory_format=self.memory_format)

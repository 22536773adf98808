"""What every part shares: the composed training config and the device, precision and layout."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parsenet.config import compose
from parsenet.engine.runtime.memory_format import LayoutChoice, choose_memory_format
from parsenet.engine.runtime.precision import Precision
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
        f"train.channels_last={str(args.channels_last).lower()}",  # auto, true or false
        f"train.compile={str(args.compile).lower()}",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.keep_snapshots=0",
        "model.backbone.pretrained=none",  # random weights: speed does not depend on them
        *args.override,
    ]
    resolved = compose("train", overrides)
    model_cfg = resolved["model"]
    model_cfg["input_norm"] = choose_input_norm(model_cfg["input_norm"], None)  # random weights
    return resolved


class Setup:
    """Device, precision (:class:`~parsenet.engine.runtime.precision.Precision`, as the
    trainer's) and layout setting shared by every measurement."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.precision = Precision(args.amp, self.device)
        self.amp = args.amp
        self.channels_last = args.channels_last  # auto (what users get), True or False
        self.compile = args.compile

    def layout(
        self,
        model: nn.Module,
        shape: tuple[int, ...],
        training: bool,
        channels_last: bool | None = None,
    ) -> LayoutChoice:
        """The layout ``model`` runs in for inputs of ``shape``: as ``--channels-last`` says
        (by default ``auto``, the choice training and inference make, from the same cache), or
        ``channels_last`` forcing one."""
        setting = self.channels_last if channels_last is None else channels_last
        return choose_memory_format(
            model, self.device, shape, setting, training=training, amp=self.amp
        )

    def prepare(self, model: nn.Module, layout: LayoutChoice) -> nn.Module:
        """The model on the device, in the layout, compiled if asked."""
        model = model.to(self.device, memory_format=layout.memory_format)
        return torch.compile(model) if self.compile else model

    def images(
        self, batch: int, height: int, width: int, layout: LayoutChoice | None = None
    ) -> torch.Tensor:
        """A random input batch on the device, in the layout (NCHW without one)."""
        images = torch.randn(batch, 3, height, width, device=self.device)
        if layout is None:
            return images
        return images.contiguous(memory_format=layout.memory_format)


def layout_note(layout: LayoutChoice) -> str:
    """How a figure's layout was chosen, for the report: ``channels_last (probe)``."""
    return f"{layout.name} ({layout.decided_by})"

"""The training loop's settings (``train.*``), checked once and typed."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from parsenet.config import is_finite_number
from parsenet.data.loader import loader_workers
from parsenet.engine.runtime.memory_format import layout_setting
from parsenet.engine.runtime.precision import AMP_DTYPES
from parsenet.engine.scoring.inference import InferenceMode
from parsenet.errors import ConfigError

POSITIVE = ("max_iters", "batch_size", "iter_size", "log_every", "max_nonfinite")
NON_NEGATIVE = ("eval_every", "checkpoint_every", "num_overlays", "keep_snapshots", "report_worst")
NOT_UNDER_TRAIN = ("inference", "seed", "num_workers")  # fields read from other config nodes


def whole_number(key: str, value: Any, minimum: int) -> int:
    """``value`` if it is a whole number ≥ ``minimum``, else a :class:`ConfigError` naming
    ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be a whole number ≥ {minimum}")
    return value


def flag(key: str, value: Any) -> bool:
    """``value`` if it is true or false, else a :class:`ConfigError` naming ``key``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
    return value


@dataclass(frozen=True)
class TrainSettings:
    """What the loop does, from ``configs/train.yaml``'s ``train`` node (see its comments).

    Attributes:
        max_iters, batch_size, iter_size: the schedule: optimiser steps, images per process and
            step, batches accumulated per step.
        eval_every, checkpoint_every, log_every: intervals in iterations (0: only at the end).
        num_overlays, keep_snapshots, max_nonfinite: validation panels written, snapshots
            kept, non-finite steps in a row tolerated.
        report, report_worst: whether the final evaluation writes ``report.html``, and how
            many of the worst validation images it draws.
        resume: ``auto``, a checkpoint path, or None.
        amp, channels_last, compile: precision and speed (``channels_last``: True, False or
            ``auto``, see :mod:`parsenet.engine.runtime.memory_format`).
        inference: how validation forms its scores (the ``inference`` node).
        seed: the run's seed; num_workers: training loader processes (``data.num_workers``,
            ``auto`` resolved by :func:`~parsenet.data.loader.loader_workers`).
    """

    max_iters: int
    batch_size: int
    iter_size: int
    log_every: int
    max_nonfinite: int
    eval_every: int
    checkpoint_every: int
    num_overlays: int
    keep_snapshots: int
    report_worst: int
    report: bool
    resume: str | None
    amp: str
    channels_last: bool | str
    compile: bool
    inference: InferenceMode
    seed: int
    num_workers: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TrainSettings:
        """Check and type ``cfg['train']`` (plus ``inference``, ``seed`` and
        ``data.num_workers``); a value out of range is a :class:`ConfigError` naming its key,
        before anything is built."""
        check_recipe(cfg)
        train = cfg["train"]
        known = {field.name for field in fields(cls)} - set(NOT_UNDER_TRAIN)
        unknown = sorted(set(train) - known)
        if unknown:
            raise ConfigError(f"train.{unknown[0]} is not a setting; choose among {sorted(known)}")
        counts = {key: whole_number(f"train.{key}", train[key], 1) for key in POSITIVE}
        counts |= {key: whole_number(f"train.{key}", train[key], 0) for key in NON_NEGATIVE}
        if train["amp"] not in AMP_DTYPES:
            raise ConfigError(f"train.amp={train['amp']!r} is not one of {sorted(AMP_DTYPES)}")
        resume = train["resume"]
        return cls(
            **counts,
            resume=None if resume in (None, "", "none") else str(resume),
            amp=train["amp"],
            channels_last=layout_setting("train.channels_last", train["channels_last"]),
            compile=flag("train.compile", train["compile"]),
            report=flag("train.report", train["report"]),
            inference=InferenceMode.from_config(cfg["inference"]),
            seed=whole_number("seed", cfg["seed"], 0),
            num_workers=loader_workers(cfg["data"]["num_workers"]),  # a count, or auto
        )

    def resume_path(self, run_dir: Path) -> Path | None:
        """The checkpoint to continue from: ``auto`` is ``run_dir/checkpoints/last.pt`` when it
        exists (a fresh start otherwise), a path is taken as it is, None is a fresh start."""
        if self.resume is None:
            return None
        if self.resume == "auto":
            last = run_dir / "checkpoints" / "last.pt"
            return last if last.is_file() else None
        return Path(self.resume)


def number_at_least(key: str, value: Any, minimum: float, strict: bool) -> float:
    """``value`` if it is a finite number above ``minimum`` (or equal, unless ``strict``), else
    a :class:`ConfigError` naming ``key``."""
    if not is_finite_number(value) or value < minimum or (strict and value == minimum):
        raise ConfigError(f"{key}={value!r} must be a number {'>' if strict else '≥'} {minimum}")
    return float(value)


def check_decay_rate(key: str, value: Any) -> None:
    """Raise a :class:`ConfigError` naming ``key`` unless ``value`` is a number in [0, 1) (a
    momentum or an Adam beta: at 1 or more the running averages grow without bound)."""
    if not is_finite_number(value) or not 0 <= value < 1:
        raise ConfigError(f"{key}={value!r} must be a number in [0, 1), e.g. 0.9")


def check_betas(betas: Any) -> None:
    """Raise a :class:`ConfigError` unless ``optim.betas`` is two numbers in [0, 1)."""
    if not isinstance(betas, list | tuple) or len(betas) != 2:
        raise ConfigError(f"optim.betas={betas!r} must be two numbers in [0, 1), e.g. [0.9,0.999]")
    for index, beta in enumerate(betas):
        check_decay_rate(f"optim.betas[{index}]", beta)


def check_recipe(cfg: dict[str, Any]) -> None:
    """Check the values a user types for the optimiser and the augmentation (``optim.lr``,
    ``optim.weight_decay``, ``optim.momentum``, ``optim.betas``, ``lr_mult.*``,
    ``data.augment.*``) before anything is built; a bad one is a :class:`ConfigError` naming
    its key."""
    optim = cfg["optim"]
    number_at_least("optim.lr", optim.get("lr"), 0, strict=True)
    number_at_least("optim.weight_decay", optim.get("weight_decay", 0.0), 0, strict=False)
    if "momentum" in optim:
        check_decay_rate("optim.momentum", optim["momentum"])
    if "betas" in optim:
        check_betas(optim["betas"])
    for key, value in cfg["lr_mult"].items():
        number_at_least(f"lr_mult.{key}", value, 0, strict=False)
    augment = cfg["data"].get("augment") or {}
    if augment.get("crop_size") is not None:
        whole_number("data.augment.crop_size", augment["crop_size"], 1)
    scales = augment.get("scale_range", [1.0, 1.0])
    if not isinstance(scales, list) or len(scales) != 2:
        raise ConfigError(
            f"data.augment.scale_range={scales!r} must be two numbers, low first (e.g. [0.5,2.0])"
        )
    low, high = (number_at_least("data.augment.scale_range", s, 0, strict=True) for s in scales)
    if low > high:
        raise ConfigError(f"data.augment.scale_range={scales!r} must give the low end first")
    flag("data.augment.flip", augment.get("flip", False))

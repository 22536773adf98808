"""Checkpoints: written atomically, read with one clear error for anything wrong."""

from __future__ import annotations

import pickle
import platform
import re
import warnings
from pathlib import Path
from typing import Any

import torch

import parsenet
from parsenet.errors import CheckpointError
from parsenet.fileio import atomic_write

CHECKPOINT_FORMAT = "parsenet-checkpoint"
REQUIRED_KEYS = ("model", "config", "dataset", "iteration")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# What torch's safe loader wraps around the unpickler's own message: left out of ours.
TORCH_ADVICE = ("Weights only load failed.", torch.serialization.UNSAFE_MESSAGE)
TORCH_DOCS_NOTE = "Check the documentation of torch.load"


def package_versions() -> dict[str, str]:
    """Versions recorded in every checkpoint."""
    return {
        "parsenet": parsenet.__version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` through a temporary file in the same folder and a rename, so
    the file at ``path`` is always either the old or the new complete checkpoint."""
    payload = {"format": CHECKPOINT_FORMAT, "versions": package_versions(), **state}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def plain_text(text: str) -> str:
    """``text`` without terminal colour codes, stripped."""
    return ANSI_ESCAPE.sub("", text).strip()


def refusal_reason(error: pickle.UnpicklingError) -> str:
    """Why torch's safe loader refused a file, in a few plain words: the global it blocked
    (``posix.system``), else the unpickler's own message, never torch's advice to load it
    unsafely."""
    text = plain_text(str(error)).partition(TORCH_DOCS_NOTE)[0]
    if found := re.search(r"\bGLOBAL ([\w.]+)", text):  # allowed by no list, or a blocked module
        return f"it holds a pickled {found.group(1)}, not tensors and plain values"
    detail = text.rpartition("WeightsUnpickler error:")[2]
    for advice in TORCH_ADVICE:
        detail = detail.replace(advice, "")
    return f"a pickle that is not a torch checkpoint: {' '.join(detail.split())}".rstrip(": ")


def content_reason(content: object) -> str:
    """What a file that torch can read holds instead of a parsenet checkpoint."""
    if not isinstance(content, dict):
        return f"it holds a {type(content).__name__}, not a dict"
    keys = ", ".join(sorted(map(str, content))[:5])
    return f"a dict without format={CHECKPOINT_FORMAT!r}; its keys: {keys or 'none'}"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a parsenet checkpoint on the CPU, or raise :class:`CheckpointError` saying why not
    in one plain line (a file torch's safe loader refuses: ``… is not a parsenet checkpoint
    (reason)``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file; pass the .pt file itself")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols of foreign files
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # a pickle of something else than tensors
        raise CheckpointError(
            f"checkpoint {path} is not a parsenet checkpoint ({refusal_reason(error)})"
        ) from None
    except Exception as error:  # torch raises many types for damaged files
        first_line = (plain_text(str(error)).splitlines() or [""])[0]
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated or not a parsenet checkpoint): "
            f"{type(error).__name__} {first_line}".rstrip()
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a parsenet checkpoint ({content_reason(checkpoint)})"
        )
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return checkpoint


def restore_model(
    checkpoint: dict[str, Any],
    path: str | Path,
    model_cfg: dict[str, Any] | None = None,
    num_classes: int | None = None,
) -> torch.nn.Module:
    """Build the checkpoint's model (or ``model_cfg``) and load its weights.

    Args:
        checkpoint: as returned by :func:`load_checkpoint`.
        path: the checkpoint's path, for messages.
        model_cfg: a model config that replaces the checkpoint's own (must fit its weights).
        num_classes: the class count the caller's dataset has; a mismatch is an error.

    Raises:
        CheckpointError: the class count or the architecture does not match the weights.
    """
    from parsenet.models import build_model

    trained_on = checkpoint["dataset"]
    trained_classes = len(trained_on["class_names"])
    if num_classes is not None and num_classes != trained_classes:
        raise CheckpointError(
            f"checkpoint {path} predicts {trained_classes} classes ({trained_on['name']}) but the "
            f"chosen data has {num_classes}; evaluate it on data with the same classes"
        )
    cfg = model_cfg if model_cfg is not None else checkpoint["config"]["model"]
    model = build_model(cfg, trained_classes)
    own = model.state_dict()
    saved = checkpoint["model"]
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(saved) if own[k].shape != saved[k].shape)
    if missing or unexpected or wrong_shape:
        trained_model = checkpoint["config"]["model"].get("name")
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong_shape),
            )
            if keys
        )
        raise CheckpointError(
            f"checkpoint {path} holds a {trained_model} model that does not fit "
            f"model={cfg.get('name')} with these options ({details}); drop the model overrides"
        )
    model.load_state_dict(saved)
    return model

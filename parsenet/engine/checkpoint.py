"""Checkpoints: written atomically, read with one clear error for anything wrong."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

import parsenet
from parsenet.errors import CheckpointError
from parsenet.fileio import atomic_write

CHECKPOINT_FORMAT = "parsenet-checkpoint"
REQUIRED_KEYS = ("model", "config", "dataset", "iteration")


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


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a parsenet checkpoint on the CPU, or raise :class:`CheckpointError` saying why not."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file; pass the .pt file itself")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged files
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated or not a parsenet checkpoint): "
            f"{type(error).__name__} {first_line}".rstrip()
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a parsenet checkpoint")
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

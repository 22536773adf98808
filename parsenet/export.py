"""Exporting a trained model to TorchScript or ONNX, with dynamic height and width, and checking
the exported file against the eager model."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from parsenet.errors import ConfigError
from parsenet.fileio import atomic_output

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_PACKAGES = "pip install onnx onnxscript onnxruntime (or pip install -e '.[export]')"

Runner = Callable[[torch.Tensor], np.ndarray]


def export_model(model: nn.Module, fmt: str, path: str | Path) -> Path:
    """Write ``model`` (in eval mode) as TorchScript (traced) or ONNX (opset from the exporter,
    dynamic batch, height and width) through a temporary file renamed into place."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not one of {sorted(FORMATS)}")
    example = torch.randn(1, 3, 96, 128)
    model = model.eval()
    with atomic_output(path) as temporary, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks in Python
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(model, example), str(temporary))
        else:
            _require_onnx()
            dims = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                model,
                (example,),
                str(temporary),
                dynamo=True,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=(dims,),
                verbose=False,
            )
    return Path(path)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(f"format=onnx needs the ONNX packages: {ONNX_PACKAGES}") from None


def load_runner(fmt: str, path: str | Path) -> Runner:
    """A function running the exported file on an N×3×H×W tensor (TorchScript, or ONNX with
    onnxruntime) and returning the logits as a NumPy array."""
    if fmt == "torchscript":
        scripted = torch.jit.load(str(path))

        def run_torchscript(images: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return scripted(images).numpy()

        return run_torchscript
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(f"checking an ONNX export needs onnxruntime: {ONNX_PACKAGES}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images.numpy()})[0]


def parity(model: nn.Module, runner: Runner, sizes: Sequence[Sequence[int]]) -> list[dict]:
    """Compare the export with the eager model on random images of each (height, width): the
    largest absolute logit difference and the share of pixels with the same argmax."""
    generator = torch.Generator().manual_seed(0)
    results = []
    for height, width in sizes:
        images = torch.randn(1, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model.eval()(images).numpy()
        got = runner(images)
        results.append(
            {
                "size": [height, width],
                "max_abs_diff": float(np.abs(got - expected).max()),
                "argmax_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
            }
        )
    return results

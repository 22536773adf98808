"""ONNX Runtime as a backend: writing a model as ONNX, running an ONNX file on the CPU, and the
cached export that ``backend=onnxruntime`` runs. Imported by :mod:`parsenet.loading` (the backend)
and :mod:`parsenet.export` (the export command) alike."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parsenet.engine.runtime.memory_format import cache_path
from parsenet.errors import ConfigError
from parsenet.fileio import staged_output


def example_input() -> torch.Tensor:
    """The image an export traces the model on (its height and width stay dynamic)."""
    return torch.randn(1, 3, 96, 128)


ONNX_PACKAGES = "pip install onnx onnxscript onnxruntime (or pip install -e '.[export]')"

# Protobuf cannot hold a model of 2 GiB or more, so weights past this many bytes go into a sidecar
# file; the margin leaves room for the graph (torch's exporter draws the same line).
SINGLE_FILE_LIMIT = 1536 * 2**20
# Node metadata naming the traced code by a counter of this process (``<eval_with_key>.62``): left
# out, so that an export of the same model is the same file in any process.
STACK_TRACE = "pkg.torch.onnx.stack_trace"
# The sidecar of a model over that limit: ``<name>.data`` beside ``<name>``, which names it.
SIDECAR_SUFFIX = ".data"


def save_onnx(model: nn.Module, path: Path) -> None:
    """Write ``model`` (in eval mode) as ONNX exactly at ``path`` (opset from the exporter,
    dynamic batch, height and width): one file with the weights inside, or over
    :data:`SINGLE_FILE_LIMIT` bytes of weights ``<name>.data`` beside it, referenced by that name.
    Callers write into :func:`parsenet.fileio.staged_output` with :data:`SIDECAR_SUFFIX`."""
    _require_onnx()
    dims = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter warnings about shape checks in Python
        program = torch.onnx.export(
            model.eval(),
            (example_input(),),
            dynamo=True,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=(dims,),
            verbose=False,
        )
    for node in program.model.graph.all_nodes():
        node.metadata_props.pop(STACK_TRACE, None)  # the same model, the same bytes
    initializers = program.model.graph.initializers.values()
    weights = sum(
        value.const_value.nbytes for value in initializers if value.const_value is not None
    )
    program.save(path, external_data=weights > SINGLE_FILE_LIMIT)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(f"format=onnx needs the ONNX packages: {ONNX_PACKAGES}") from None


def onnxruntime_session(path: str | Path, needed_for: str = "backend=onnxruntime") -> Any:
    """An ONNX Runtime CPU session of an exported file, with as many intra-op threads as torch
    uses (both backends get the same cores); without onnxruntime a :class:`ConfigError` saying
    what ``needed_for`` it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(f"{needed_for} needs onnxruntime: {ONNX_PACKAGES}") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntimeModel(nn.Module):
    """An exported model run by ONNX Runtime on the CPU, behind the module interface the
    inference modes call: N×3×H×W float32 images in, N×K×H×W logits out (a torch tensor)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = onnxruntime_session(path)
        self.input_name = self.session.get_inputs()[0].name
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: pixels})[0])

    def extra_repr(self) -> str:
        return f"{self.path}"


def cached_file(checkpoint: Path, identity: list[Any], suffix: str) -> Path:
    """Where in ``onnx/`` of the cache folder (beside ``memory_format.json``, see
    :func:`parsenet.engine.runtime.memory_format.cache_path`) a file made from ``checkpoint``
    lives: named after the checkpoint and a digest of its path, size and modification time, the
    torch version and ``identity`` (what else the file depends on), so that a changed checkpoint
    or setting is a new file, never a stale one."""
    about = checkpoint.stat()
    key = [str(checkpoint.resolve()), about.st_size, about.st_mtime_ns, str(torch.__version__)]
    digest = hashlib.sha256(json.dumps([*key, *identity], sort_keys=True).encode()).hexdigest()
    return cache_path().parent / "onnx" / f"{checkpoint.stem}-{digest[:20]}{suffix}"


def cached_onnx_export(model: nn.Module, checkpoint: Path, model_cfg: dict[str, Any]) -> Path:
    """The ONNX export of a checkpoint's model, written once (see :func:`cached_file`) and
    reused while the checkpoint file, its model config and the torch version stay the same."""
    path = cached_file(checkpoint, [model_cfg], ".onnx")
    if not path.is_file():
        with staged_output(path, [SIDECAR_SUFFIX]) as staged:
            save_onnx(model, staged)
    return path

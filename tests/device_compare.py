"""What the GPU checks compare, and the bounds a wrong result exceeds: one module for
``tests/test_gpu.py`` (on the GPU, or with the CPU standing in for it) and
``tests/test_device_compare.py`` (a planted fault for every bound, on every commit).

Scores are held to an absolute bound per image: the largest |device score − CPU score| may be at
most ``relative`` × the largest |CPU score| of that image. A result within it can predict a
class other than the CPU's only at pixels whose CPU margin between the top two classes is at
most twice the bound (a "near tie"). Where the device's scores are not at hand (a confusion
matrix, label files), what differs must fit in those near ties.

The figures the bounds rest on were measured on the CPU (AMD EPYC, torch 2.14) for this network
(reduced VGG16 + ParseNet head): the largest score difference relative to the image's largest
score, over random inputs (width 1 at 64×96, width 1/16 at 48×64) and over the validation strips
of width-1/16 models trained 1, 8 and 50 iterations, in the three inference modes (logits for
whole and slide, averaged probabilities for msflip):

- float32 against float64: 2.2e-6 at most (float32's own rounding, u = 6e-8, through 16 layers);
- TF32 convolutions, emulated by :func:`tf32_copy` (inputs and weights rounded to TF32's 10-bit
  mantissa, float32 sums): 4.3e-3 at most (the model after 1 iteration; 1.0e-3 to 2.1e-3 for
  the others, 1.2e-4 to 1.1e-3 for msflip's probabilities; truncating instead of rounding:
  1.8e-3 where rounding gave 1.3e-3);
- bf16 autocast against float32: 2.4e-2 at most; fp16 autocast: 2.5e-3 at most.

The faults the bounds are there to catch are far larger: scores shifted by one pixel differ by
0.31 of the largest score, two classes swapped by 0.44 (width 1/16, random weights).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters
from torch.overrides import TorchFunctionMode

from parsenet.models.l2norm import L2Norm


@dataclass(frozen=True)
class Bound:
    """How far device scores may be from the CPU's: ``relative`` × the largest |CPU score| of
    the image."""

    name: str
    relative: float


# 45× float32's measured 2.2e-6 (another summation order, cuDNN's Winograd and FFT algorithms),
# and 10× below what TF32 gives random weights on a whole image (1e-3, the float32 logits test's
# case): a device that computes those float32 convolutions in TF32 exceeds it.
FLOAT32 = Bound("float32, TF32 off", 1e-4)
# 4.6× the emulated TF32's 4.3e-3 (the emulation has TF32's rounding of the inputs, the dominant
# error, but not cuDNN's summation order). PyTorch computes float32 convolutions in TF32 on
# Ampere and later GPUs unless told otherwise: evaluation and prediction run so.
TF32 = Bound("TF32 convolutions", 2e-2)
# Against float32 with TF32 off: 4× the measured 2.4e-2 (bf16) and 2.5e-3 (fp16).
AUTOCAST = {"bf16": Bound("bf16 autocast", 1e-1), "fp16": Bound("fp16 autocast", 1e-2)}


def tf32_rounded(values: torch.Tensor) -> torch.Tensor:
    """float32 ``values`` rounded to TF32's 10-bit mantissa (to nearest, ties to even), as a
    tensor core reads its float32 inputs."""
    bits = values.contiguous().view(torch.int32)
    rounded = (bits + 0x0FFF + ((bits >> 13) & 1)) & ~0x1FFF
    return rounded.view(torch.float32)


def tf32_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose convolutions read their weights and inputs rounded to TF32 (the
    CPU standing in for a GPU's default float32 convolutions)."""
    replica = copy.deepcopy(model)
    for module in replica.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            with torch.no_grad():
                module.weight.copy_(tf32_rounded(module.weight))
            module.register_forward_pre_hook(lambda _, args: (tf32_rounded(args[0]), *args[1:]))
    return replica


class Float64Copy(nn.Module):
    """A float64 copy of a model behind float32 inputs and outputs (the CPU standing in for a
    device whose float32 differs from the CPU's by rounding only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).double()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The model's scores, computed in float64 and returned in float32."""
        return self.model(images.double()).float()


def near_ties(expected: torch.Tensor, bound: Bound) -> torch.Tensor:
    """H×W: where the top two of the K×H×W CPU scores are within twice the bound of each other
    (the pixels a result within the bound may predict differently)."""
    top = expected.topk(2, dim=0).values
    return top[0] - top[1] <= 2 * bound.relative * expected.abs().amax()


def largest_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got − expected| / max |expected| (infinite where ``got`` is not finite)."""
    if not torch.isfinite(got).all():
        return math.inf
    return ((got - expected).abs().amax() / expected.abs().amax()).item()


@dataclass
class ScoreComparison:
    """Device scores against the CPU's, image by image, held to ``bound``.

    Attributes:
        largest: the largest relative difference over the images added so far.
        pixels, differing, near_ties: scored pixels, those the two predict differently and
            those within the bound of a tie (``scored`` pixels only, when given).
    """

    bound: Bound
    largest: float = 0.0
    pixels: int = 0
    differing: int = 0
    near_ties: int = 0

    def add(
        self, got: torch.Tensor, expected: torch.Tensor, scored: torch.Tensor | None = None
    ) -> None:
        """Compare one image's K×H×W scores (at its ``scored`` pixels, H×W, or all)."""
        self.largest = max(self.largest, largest_difference(got, expected))
        scored = torch.ones(expected.shape[1:], dtype=torch.bool) if scored is None else scored
        ties = near_ties(expected, self.bound) & scored
        self.pixels += int(scored.sum())
        self.differing += int((scored & (got.argmax(0) != expected.argmax(0))).sum())
        self.near_ties += int(ties.sum())

    def figure(self) -> str:
        """What was measured, against the bound."""
        return (
            f"largest score difference {self.largest:.2e} of the largest score (bound "
            f"{self.bound.relative:.0e}, {self.bound.name}); {self.differing} of {self.pixels} "
            f"pixels predicted differently, {self.near_ties} within the bound of a tie"
        )

    def check(self) -> None:
        """Fail when a score is further from the CPU's than the bound allows."""
        assert self.largest <= self.bound.relative, self.figure()


@dataclass(frozen=True)
class ConfusionComparison:
    """A device's confusion matrix against the CPU's: the same scored pixels, and no more
    pixels moved between cells than there are near ties (:class:`ScoreComparison`)."""

    got: np.ndarray
    expected: np.ndarray
    near_ties: int

    @property
    def moved(self) -> int:
        """Pixels predicted differently, as far as the matrices show (half their L1 distance)."""
        return int(np.abs(self.got - self.expected).sum()) // 2

    def figure(self) -> str:
        """What was measured."""
        return (
            f"confusion matrices differ in {self.moved} of {int(self.expected.sum())} pixels "
            f"({int(self.got.sum())} scored on the device; {self.near_ties} near ties allowed)"
        )

    def check(self) -> None:
        """Fail on another count of scored pixels or on more moved pixels than near ties."""
        assert self.got.sum() == self.expected.sum(), self.figure()
        assert self.moved <= self.near_ties, self.figure()


@dataclass
class LabelComparison:
    """Device label maps against the CPU's scores: a pixel may differ only where the CPU's top
    two classes are within twice ``bound`` of each other."""

    bound: Bound
    pixels: int = 0
    differing: int = 0
    beyond_ties: int = 0

    def add(self, got: np.ndarray, expected: torch.Tensor) -> None:
        """Compare one H×W label map with the CPU's K×H×W scores of that image."""
        differ = torch.as_tensor(got.astype(np.int64)) != expected.argmax(0)
        self.pixels += differ.numel()
        self.differing += int(differ.sum())
        self.beyond_ties += int((differ & ~near_ties(expected, self.bound)).sum())

    def figure(self) -> str:
        """What was measured."""
        return (
            f"{self.differing} of {self.pixels} label pixels differ from the CPU's, "
            f"{self.beyond_ties} beyond a near tie (bound {self.bound.relative:.0e}, "
            f"{self.bound.name})"
        )

    def check(self) -> None:
        """Fail on a differing pixel that is no near tie."""
        assert self.beyond_ties == 0, self.figure()


# Weights after N + resume + N against 2N where an operator without a deterministic kernel ran:
# its sums in another order differ by float32 rounding (u = 6e-8), and rtol 1e-5 leaves a weight
# some 170 such roundings over the 2N steps. One AdamW step missing or extra moves nearly every
# weight by about lr = 3e-4: beyond rtol·|w| + atol for every |w| < 30 (L2Norm's γ starts at 10).
RESUME_TOLERANCE = {"rtol": 1e-5, "atol": 1e-7}


@dataclass(frozen=True)
class ResumeComparison:
    """Weights of a run continued from a snapshot against those of the run without a stop:
    bit-identical, or within :data:`RESUME_TOLERANCE` when ``operators`` (those without a
    deterministic kernel) ran."""

    whole: dict[str, torch.Tensor]
    resumed: dict[str, torch.Tensor]
    operators: tuple[str, ...] = ()

    @property
    def largest(self) -> float:
        """The largest weight difference."""
        return max((self.whole[key] - self.resumed[key]).abs().max().item() for key in self.whole)

    @property
    def identical(self) -> bool:
        """Whether every weight is bit-identical."""
        return all(torch.equal(self.whole[key], self.resumed[key]) for key in self.whole)

    def figure(self) -> str:
        """What was measured."""
        found = "bit-identical" if self.identical else f"largest difference {self.largest:.2e}"
        named = f"; no deterministic kernel: {', '.join(self.operators)}" if self.operators else ""
        return f"weights {found} over {len(self.whole)} tensors{named}"

    def check(self) -> None:
        """Fail unless identical, or (with non-deterministic operators) within the tolerance."""
        assert self.whole.keys() == self.resumed.keys()
        if not self.operators:
            assert self.identical, self.figure()
        for key in self.whole:
            torch.testing.assert_close(self.resumed[key], self.whole[key], **RESUME_TOLERANCE)


# What a checkpoint moved between devices must bring along unchanged (best_miou is left out: it
# is the validation score of whichever device evaluated last).
MOVED_STATE = ("model", "optimizer", "scheduler", "scaler", "nonfinite", "iteration")


def state_differences(written: Any, read: Any, where: str = "") -> list[str]:
    """Where two checkpoint parts differ: tensors bit for bit (a move between devices copies
    float32 exactly), everything else by equality."""
    if isinstance(written, dict) and isinstance(read, dict):
        if written.keys() != read.keys():
            one_side = sorted(map(str, written.keys() ^ read.keys()))
            return [f"{where}: keys {', '.join(one_side)} on one side only"]
        return [
            difference
            for key in written
            for difference in state_differences(written[key], read[key], f"{where}.{key}")
        ]
    if isinstance(written, list | tuple) and isinstance(read, list | tuple):
        if len(written) != len(read):
            return [f"{where}: {len(written)} vs {len(read)} items"]
        return [
            difference
            for index, (a, b) in enumerate(zip(written, read, strict=True))
            for difference in state_differences(a, b, f"{where}[{index}]")
        ]
    if isinstance(written, torch.Tensor) and isinstance(read, torch.Tensor):
        same = written.dtype == read.dtype and torch.equal(written.cpu(), read.cpu())
        return [] if same else [f"{where}: tensors differ"]
    return [] if written == read else [f"{where}: {written!r} vs {read!r}"]


@dataclass(frozen=True)
class StateComparison:
    """A checkpoint as written on one device against what another device read and wrote back:
    every part of :data:`MOVED_STATE` the same, tensors bit for bit."""

    written: dict[str, Any]
    read: dict[str, Any]

    @property
    def differences(self) -> list[str]:
        """Where they differ."""
        return [
            difference
            for part in MOVED_STATE
            for difference in state_differences(self.written[part], self.read[part], part)
        ]

    def figure(self) -> str:
        """What was measured."""
        tensors = sum(1 for value in self.written["model"].values() if torch.is_tensor(value))
        found = self.differences
        shown = "identical" if not found else f"{len(found)} differences ({found[0]}, …)"
        return f"{', '.join(MOVED_STATE)}: {shown} ({tensors} weight tensors)"

    def check(self) -> None:
        """Fail on any difference."""
        assert not self.differences, self.figure()


class DtypeLog(TorchFunctionMode):
    """The name and result dtype of every torch function called inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, torch.dtype]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if isinstance(result, torch.Tensor):
            self.calls.append((getattr(func, "__name__", str(func)), result.dtype))
        return result


@dataclass
class L2NormDtypes:
    """The dtypes L2Norm layers received and computed their norms in (pow, sum, sqrt)."""

    inputs: list[torch.dtype] = field(default_factory=list)
    computed: list[set[torch.dtype]] = field(default_factory=list)

    def forward(self, plain: Any) -> Any:
        """``L2Norm.forward`` that logs into this record, around ``plain``."""

        def logged(layer: L2Norm, x: torch.Tensor) -> torch.Tensor:
            self.inputs.append(x.dtype)
            with DtypeLog() as log:
                result = plain(layer, x)
            self.computed.append(
                {dtype for name, dtype in log.calls if name in ("pow", "sum", "sqrt")}
            )
            return result

        return logged


@contextmanager
def logged_l2norms() -> Iterator[L2NormDtypes]:
    """Inside the block every L2Norm layer logs its input dtype and the dtypes of its norm."""
    record = L2NormDtypes()
    plain = L2Norm.forward
    L2Norm.forward = record.forward(plain)
    try:
        yield record
    finally:
        L2Norm.forward = plain


@dataclass
class TrainingObservation:
    """How training steps ran (:func:`observed_training`).

    Attributes:
        forwards: training forward passes seen.
        autocast: the autocast dtype of each (None: autocast off).
        batches_channels_last: whether each batch came in NHWC.
        conv_outputs: dtypes of the convolutions' outputs (not seen through a compiled model).
        l2norms: L2Norm's input dtypes and the dtypes of its norm (likewise).
        weights_channels_last: every 4-d weight in NHWC, and not all of them NCHW as well.
        scale: the fp16 gradient scaler's scale (None: no scaler).
        compiled: the steps went through a ``torch.compile``d module.
        frames: frames Dynamo compiled during the steps.
    """

    forwards: int = 0
    autocast: set[torch.dtype | None] = field(default_factory=set)
    batches_channels_last: set[bool] = field(default_factory=set)
    conv_outputs: set[torch.dtype] = field(default_factory=set)
    l2norms: L2NormDtypes = field(default_factory=L2NormDtypes)
    weights_channels_last: bool = False
    scale: float | None = None
    compiled: bool = False
    frames: int = 0

    def figure(self) -> str:
        """What was seen, in a few words."""
        precision = ", ".join(dtype_names(self.autocast - {None})) or "off"
        layout = "NHWC" if self.batches_channels_last == {True} else "NCHW"
        seen = f"autocast {precision}, batches {layout}"
        if self.conv_outputs:
            seen += f", convolutions output {', '.join(dtype_names(self.conv_outputs))}"
        if self.scale is not None:
            seen += f", gradient scaler at {self.scale:g}"
        if self.compiled:
            seen += f", compiled ({self.frames} frames)"
        return seen


def dtype_names(dtypes: set) -> list[str]:
    """``bfloat16``, ``float32``, … sorted."""
    return sorted(str(dtype).removeprefix("torch.") for dtype in dtypes)


def applied(observed: TrainingObservation, mode: str) -> list[str]:
    """What of ``mode`` (float32, bf16, fp16, channels_last, compile) the steps did not show."""
    missing = [] if observed.forwards else ["no training forward pass seen"]
    if mode in ("float32", "bf16", "fp16"):
        dtype = {"float32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
        if observed.autocast != {dtype} or observed.conv_outputs != {dtype or torch.float32}:
            missing.append(f"autocast {observed.autocast}, convolutions {observed.conv_outputs}")
        if (observed.scale is not None) != (mode == "fp16"):
            missing.append(f"gradient scaler {observed.scale}")
    if mode in ("bf16", "fp16"):
        norms = observed.l2norms
        if set(norms.inputs) != {dtype} or set().union(*norms.computed) != {torch.float32}:
            missing.append(f"L2Norm got {set(norms.inputs)}, computed in {norms.computed[:1]}")
    if mode == "channels_last" and not (
        observed.weights_channels_last and observed.batches_channels_last == {True}
    ):
        missing.append("weights or batches not in NHWC")
    if mode == "compile" and not (observed.compiled and observed.frames >= 1):
        missing.append(f"compiled {observed.compiled}, {observed.frames} frames")
    return missing


def assert_applied(observed: TrainingObservation, mode: str) -> None:
    """Fail when the steps did not run as ``mode`` asks."""
    missing = applied(observed, mode)
    assert not missing, f"{mode} not applied: {'; '.join(missing)} ({observed.figure()})"


@contextmanager
def observed_training(trainer: Any) -> Iterator[TrainingObservation]:
    """Watch a :class:`~parsenet.engine.training.trainer.Trainer`'s training steps inside the
    block: the autocast and layout of every training forward, and — where the model is not
    compiled (its inner hooks would change Dynamo's graphs) — convolution output dtypes and
    L2Norm's dtypes. The layout of the weights, the scaler and Dynamo's frame count are read at
    the end."""
    observed = TrainingObservation()
    device = trainer.device.type
    model, forward_model = trainer.model, trainer.forward_model

    def batch(module: nn.Module, args: tuple) -> None:
        if module.training:
            observed.forwards += 1
            on = torch.is_autocast_enabled(device)
            observed.autocast.add(torch.get_autocast_dtype(device) if on else None)
            observed.batches_channels_last.add(
                args[0].is_contiguous(memory_format=torch.channels_last)
            )

    def conv(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if module.training:
            observed.conv_outputs.add(output.dtype)

    frames = counters["frames"]["ok"]
    with ExitStack() as stack:
        stack.callback(forward_model.register_forward_pre_hook(batch).remove)
        if not isinstance(forward_model, OptimizedModule):
            for module in model.modules():
                if isinstance(module, nn.Conv2d):
                    stack.callback(module.register_forward_hook(conv).remove)
            observed.l2norms = stack.enter_context(logged_l2norms())
        yield observed
    kernels = [p for p in model.parameters() if p.dim() == 4]
    observed.weights_channels_last = all(
        p.is_contiguous(memory_format=torch.channels_last) for p in kernels
    ) and not all(p.is_contiguous() for p in kernels)
    scaler = trainer.precision.scaler
    observed.scale = scaler.get_scale() if scaler.is_enabled() else None
    observed.compiled = isinstance(forward_model, OptimizedModule)
    observed.frames = counters["frames"]["ok"] - frames

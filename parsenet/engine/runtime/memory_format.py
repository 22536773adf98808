"""The memory layout a model runs in: NCHW (``contiguous``) or NHWC (``channels_last``).

``channels_last=auto`` (the default of training, evaluation, prediction and the Python API) takes
the faster of the two for this machine and this model: a short measured probe — a few forward
(and, for training, backward) passes of a copy of the model in each layout, taking turns — whose
verdict is cached per machine and model shape in ``memory_format.json`` under the cache folder
(``$PARSENET_CACHE``, else ``$XDG_CACHE_HOME/parsenet``, else ``~/.cache/parsenet``), so it costs
seconds once. ``true``/``false`` force a layout. The choice is logged, and its
:meth:`LayoutChoice.record`
goes into ``train_log.jsonl`` (the config line's ``layout``) and ``metrics.json``.

Why measured and not a rule: on a 2-core Intel Xeon without bf16 NHWC trained 26 % faster
(issue 17), on the 2-core AMD EPYC of docs/benchmarks.md the difference depends on the model
and the image size; see docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from parsenet.engine.runtime.distributed import DistContext, broadcast_object
from parsenet.engine.runtime.precision import AMP_DTYPES
from parsenet.errors import ConfigError
from parsenet.fileio import atomic_write

log = logging.getLogger(__name__)

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
CACHE_ENV = "PARSENET_CACHE"
CACHE_FILE = "memory_format.json"
# NHWC must beat NCHW by this fraction in the probe to be chosen: within it the default layout
# stays (no conversions, the layout every operator is written for first).
MARGIN = 0.02
PROBE_REPETITIONS = 3
# An image of a typical size for inference (PASCAL VOC's 500×375), what the inference probe runs.
INFERENCE_SHAPE = (1, 3, 375, 500)

# Verdicts of this process by cache file and key: where the cache cannot be written, a process
# still probes once per model and shape.
DECIDED: dict[tuple[str, str], dict[str, Any]] = {}

Probe = Callable[[nn.Module, torch.device, Sequence[int], bool, str], dict[str, list[float]]]


def layout_setting(key: str, value: Any) -> bool | str:
    """``value`` if it is ``auto``, true or false, else a :class:`ConfigError` naming ``key``."""
    if value == "auto" or isinstance(value, bool):
        return value
    raise ConfigError(f"{key}={value!r} must be auto, true or false")


@dataclass(frozen=True)
class LayoutChoice:
    """The layout a model runs in and how it was chosen.

    Attributes:
        name: ``contiguous`` (NCHW) or ``channels_last`` (NHWC).
        setting: what was asked: ``auto``, True or False.
        decided_by: ``setting`` (forced by true/false), ``probe`` (measured now), ``cache``
            (measured before on this machine, for this model and shape) or ``onnxruntime``
            (``backend=onnxruntime``, which lays tensors out itself).
        probe: the probe's figures (median seconds per layout, the speed-up of NHWC, the shape,
            training or inference), when there was one.
    """

    name: str
    setting: bool | str
    decided_by: str
    probe: dict[str, Any] | None = field(default=None)

    @property
    def memory_format(self) -> torch.memory_format:
        """The torch memory format to move the model and its inputs to."""
        return LAYOUTS[self.name]

    @property
    def channels_last(self) -> bool:
        """Whether the model runs in NHWC."""
        return self.name == "channels_last"

    def record(self) -> dict[str, Any]:
        """What ``train_log.jsonl`` and ``metrics.json`` keep (plain JSON values)."""
        found: dict[str, Any] = {
            "memory_format": self.name,
            "setting": self.setting,
            "decided_by": self.decided_by,
        }
        if self.probe is not None:
            found["probe"] = self.probe
        return found

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LayoutChoice:
        """The choice a :meth:`record` describes."""
        return cls(
            record["memory_format"], record["setting"], record["decided_by"], record.get("probe")
        )

    def describe(self) -> str:
        """One line for the log."""
        if self.decided_by in ("setting", "onnxruntime"):
            return f"memory layout {self.name} (channels_last={str(self.setting).lower()})"
        probe = self.probe or {}
        speed = probe.get("channels_last_speedup")
        measured = f", NHWC {speed:.3f}× the speed of NCHW" if speed is not None else ""
        source = "measured now" if self.decided_by == "probe" else "measured before, cached"
        return f"memory layout {self.name} (channels_last=auto: {source}{measured})"


def cache_path() -> Path:
    """``memory_format.json`` in ``$PARSENET_CACHE``, else ``$XDG_CACHE_HOME/parsenet``, else
    ``~/.cache/parsenet``."""
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        folder = Path(base) / "parsenet"
    return Path(folder).expanduser() / CACHE_FILE


def device_name(device: torch.device) -> str:
    """The processor a device is: the CPU model as the kernel reports it, or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's structure (every layer with its shapes; not the weights)."""
    return hashlib.sha256(repr(model).encode()).hexdigest()[:16]


def probe_key(
    model: nn.Module, device: torch.device, shape: Sequence[int], training: bool, amp: str
) -> str:
    """The cache key of one probe: machine, torch version, threads, model, shape and mode."""
    mode = "training" if training else "inference"
    dims = "×".join(str(size) for size in shape)
    return (
        f"{device_name(device)} ({device.type}) | torch {torch.__version__} | "
        f"{torch.get_num_threads()} threads | model {model_fingerprint(model)} | "
        f"{mode} {dims} | amp {amp}"
    )


def read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries ({} when the file is missing or unreadable)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Add ``entry`` under ``key`` to the entries there now (written with
    :func:`~parsenet.fileio.atomic_write`, so a reader never sees half a file); a cache that
    cannot be written is only logged."""
    text = json.dumps({**read_cache(path), key: entry}, indent=2) + "\n"
    try:
        atomic_write(path, lambda handle: handle.write(text.encode()))
    except OSError as error:
        log.info("layout cache %s not written: %s", path, error)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (GPU kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_layouts(
    model: nn.Module,
    device: torch.device,
    shape: Sequence[int],
    training: bool,
    amp: str,
    repetitions: int = PROBE_REPETITIONS,
) -> dict[str, list[float]]:
    """Seconds of one pass per layout and repetition, on copies of ``model`` (the model itself,
    its gradients and the random number generators are left as they were).

    Training: forward under ``amp`` autocast, cross-entropy, backward. Inference: forward in
    inference mode and the argmax. One untimed pass per layout first, then the layouts take
    turns, each repetition in the opposite order of the one before.
    """
    dtype = AMP_DTYPES[amp]
    autocast = (
        torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        images = torch.randn(*shape, device=device)
        steps = {}
        for name, memory_format in LAYOUTS.items():
            replica = copy.deepcopy(model).to(device, memory_format=memory_format)
            replica.train(training)
            steps[name] = _probe_step(
                replica, images.contiguous(memory_format=memory_format), training, autocast
            )
        seconds: dict[str, list[float]] = {name: [] for name in steps}
        for step in steps.values():
            step()
        synchronize(device)
        order = list(steps)
        for _ in range(repetitions):
            for name in order:
                started = time.perf_counter()
                steps[name]()
                synchronize(device)
                seconds[name].append(time.perf_counter() - started)
            order.reverse()
    return seconds


def _probe_step(
    replica: nn.Module,
    images: torch.Tensor,
    training: bool,
    autocast: contextlib.AbstractContextManager,
) -> Callable[[], None]:
    """One training pass (forward, loss, backward) or inference pass of ``replica``."""

    def train_pass() -> None:
        for parameter in replica.parameters():
            parameter.grad = None
        with autocast:
            logits = replica(images)
        labels = torch.zeros(
            (logits.shape[0], *logits.shape[2:]), dtype=torch.long, device=logits.device
        )
        F.cross_entropy(logits.float(), labels).backward()

    def inference_pass() -> None:
        with torch.inference_mode(), autocast:
            replica(images).argmax(dim=1)

    return train_pass if training else inference_pass


def verdict(
    seconds: dict[str, list[float]], shape: Sequence[int], training: bool
) -> dict[str, Any]:
    """The probe's figures and winner: NHWC when it is faster than NCHW by more than
    :data:`MARGIN` (the median of the per-repetition speed-ups), else NCHW."""
    speedups = [
        contiguous / channels_last
        for contiguous, channels_last in zip(
            seconds["contiguous"], seconds["channels_last"], strict=True
        )
    ]
    speedup = statistics.median(speedups)
    return {
        "memory_format": "channels_last" if speedup > 1 + MARGIN else "contiguous",
        "contiguous_s": statistics.median(seconds["contiguous"]),
        "channels_last_s": statistics.median(seconds["channels_last"]),
        "channels_last_speedup": speedup,
        "repetitions": len(speedups),
        "shape": list(shape),
        "mode": "training" if training else "inference",
    }


def choose_memory_format(
    model: nn.Module,
    device: torch.device,
    sample_shape: Sequence[int],
    setting: bool | str = "auto",
    *,
    training: bool = False,
    amp: str = "off",
    context: DistContext | None = None,
    probe: Probe | None = None,
) -> LayoutChoice:
    """The layout ``model`` should run in on ``device`` for inputs of ``sample_shape``
    (N×3×H×W).

    ``setting`` True or False forces NHWC or NCHW. ``auto`` looks the model and shape up in the
    cache and otherwise runs the probe (:func:`measure_layouts`, or ``probe`` in its place) and
    caches its verdict. Under torchrun rank 0 decides and every process follows (DDP needs one
    layout). The choice is logged.
    """
    setting = layout_setting("channels_last", setting)
    if isinstance(setting, bool):
        choice = LayoutChoice("channels_last" if setting else "contiguous", setting, "setting")
    else:
        context = context or DistContext()
        record = None
        if context.is_main:
            record = _automatic(model, device, sample_shape, training, amp, probe).record()
        choice = LayoutChoice.from_record(broadcast_object(record, context))
    log.info(choice.describe())
    return choice


def _automatic(
    model: nn.Module,
    device: torch.device,
    shape: Sequence[int],
    training: bool,
    amp: str,
    probe: Probe | None,
) -> LayoutChoice:
    """The cached verdict for this machine, model and shape, or a new probe's (then cached)."""
    shape = [int(size) for size in shape]
    key = probe_key(model, device, shape, training, amp)
    path = cache_path()
    cached = DECIDED.get((str(path), key)) or read_cache(path).get(key)
    if isinstance(cached, dict) and cached.get("memory_format") in LAYOUTS:
        DECIDED[str(path), key] = cached
        return LayoutChoice(cached["memory_format"], "auto", "cache", cached)
    log.info("measuring the faster memory layout for this model on %s …", device_name(device))
    seconds = (probe or measure_layouts)(model, device, shape, training, amp)
    figures = {**verdict(seconds, shape, training), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    meanwhile = read_cache(path).get(key)  # another process probed the same: one verdict for all
    if isinstance(meanwhile, dict) and meanwhile.get("memory_format") in LAYOUTS:
        DECIDED[str(path), key] = meanwhile
        return LayoutChoice(meanwhile["memory_format"], "auto", "cache", meanwhile)
    DECIDED[str(path), key] = figures
    write_cache(path, key, figures)
    return LayoutChoice(figures["memory_format"], "auto", "probe", figures)

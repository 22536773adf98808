"""What this CPU's instruction set offers reduced-precision inference, read from the flags of
``/proc/cpuinfo`` (Linux; elsewhere no flag is known, so nothing is assumed).

- **bfloat16** (``avx512_bf16`` or ``amx_bf16``): without them torch's bf16 convolutions are
  emulated, slower than float32, so ``backend=torch precision=bf16`` is refused there (see
  :func:`require_bf16`; ``$PARSENET_EMULATE_BF16=1`` runs it anyway, for measuring the labels
  bf16 gives, never its speed).
- **int8 dot products** (``avx512_vnni`` or ``avx_vnni``): without them ONNX Runtime's int8
  kernels still run, but multiply in 16 bits (``vpmaddubsw``), with a risk of saturation that
  the quantiser's ``reduce_range`` (7-bit weights) avoids; how much faster than float32 they
  are then depends on the model (docs/precision.md).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from parsenet.errors import ConfigError

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
EMULATE_BF16_ENV = "PARSENET_EMULATE_BF16"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty where unreadable)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (``avx512_bf16`` or ``amx_bf16``)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (``avx512_vnni`` or ``avx_vnni``)."""
    return any(flag in cpu_flags() for flag in VNNI_FLAGS)


def bf16_emulation_forced() -> bool:
    """Whether ``$PARSENET_EMULATE_BF16=1`` asks for bf16 on a CPU without its instructions."""
    return os.environ.get(EMULATE_BF16_ENV) == "1"


def require_bf16() -> None:
    """Allow ``precision=bf16`` on the CPU only where it has bf16 instructions, or where
    ``$PARSENET_EMULATE_BF16=1`` forces it (then a warning says the speed means nothing).

    Raises:
        ConfigError: no bf16 instructions here, in one line naming the flags looked for.
    """
    if has_bf16():
        return
    if not bf16_emulation_forced():
        raise ConfigError(
            f"precision=bf16 needs a CPU with bf16 instructions ({' or '.join(BF16_FLAGS)} in "
            "/proc/cpuinfo), which this one lacks (emulated bf16 is slower than float32); use "
            f"precision=fp32, or {EMULATE_BF16_ENV}=1 to measure bf16's labels anyway"
        )
    log.warning(
        "bf16 emulated (%s=1): this CPU lacks %s; the labels are bf16's, the speed is not",
        EMULATE_BF16_ENV,
        " and ".join(BF16_FLAGS),
    )


@functools.cache
def warn_int8_without_vnni() -> None:
    """Say once per process that int8 runs without int8 dot products here (works, slower)."""
    if not has_vnni():
        log.warning(
            "int8 on a CPU without %s: it works, with 7-bit weights and 16-bit products "
            "(slower than where the CPU has them)",
            " or ".join(VNNI_FLAGS),
        )

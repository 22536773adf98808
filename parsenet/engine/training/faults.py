"""What a long run must survive: stop signals, steps with a non-finite loss or gradient, and an
update that makes the weights non-finite."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Iterable
from types import FrameType

import torch

from parsenet.errors import ParsenetError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingDiverged(ParsenetError):
    """Too many steps in a row had a non-finite loss or gradient."""


class StopRequest:
    """Remembers a SIGINT/SIGTERM instead of dying, so the loop can finish its step and save.

    Use as a context manager around the training loop; the previous handlers come back on exit.
    A second signal of the same kind while stopping is left to the previous handler (so a
    second Ctrl-C still interrupts at once). Outside the main thread it does nothing.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:
            previous = self._previous.get(number)
            if callable(previous):
                previous(number, frame)
            return
        self.signal_name = signal.Signals(number).name

    @property
    def requested(self) -> bool:
        """A stop signal has arrived."""
        return self.signal_name is not None


class NonFiniteGuard:
    """Counts steps whose loss or gradient norm is not finite; gives up after ``limit`` in a row.

    Args:
        limit: consecutive non-finite steps that end training (``train.max_nonfinite``).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.in_a_row = 0

    def check(self, loss: float, grad_norm: float, iteration: int) -> bool:
        """Record a step; True if it may be applied. Raises :class:`TrainingDiverged` when this
        is the ``limit``-th non-finite step in a row."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.in_a_row = 0
            return True
        self.total += 1
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise TrainingDiverged(
                f"training stopped at iteration {iteration}: {self.in_a_row} steps in a row had a "
                f"non-finite loss or gradient (loss {loss}, gradient norm {grad_norm}); the last "
                "good checkpoint is kept — lower optim.lr, or use train.amp=off if AMP is on"
            )
        return False

    def state_dict(self) -> dict[str, int]:
        return {"total": self.total, "in_a_row": self.in_a_row}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.total, self.in_a_row = state["total"], state["in_a_row"]


def check_finite_weights(parameters: Iterable[torch.Tensor], iteration: int, lr: float) -> None:
    """Raise :class:`TrainingDiverged` if an update left any weight NaN or infinite (a finite
    loss and gradient times a learning rate that overflows), before such weights can be saved
    or evaluated: no checkpoint ever holds them."""
    weights = [parameter.detach() for parameter in parameters]
    largest = torch.nn.utils.get_total_norm(weights, math.inf).item()  # NaN if any weight is
    if not math.isfinite(largest):
        raise TrainingDiverged(
            f"training stopped at iteration {iteration}: the update made the weights non-finite "
            f"with optim.lr={lr}; nothing of that step was saved (the last checkpoint, if any, is "
            "as it was) — lower optim.lr"
        )

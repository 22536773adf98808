"""Scores over seeds: mean ± sample standard deviation, and paired differences between two
rows trained with the same seeds, with the 95 % interval of their mean (Student's t) that says
whether a difference is larger than the seed-to-seed noise."""

from __future__ import annotations

import math
import statistics

from scipy.stats import t as student_t


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n − 1; None for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def spread(values: list[float]) -> str:
    """``mean ± sd`` in %, the value alone for one seed, ``–`` for none."""
    if not values:
        return "–"
    mean, sd = mean_sd(values)
    return f"{mean:.2f}" if sd is None else f"{mean:.2f} ± {sd:.2f}"


def paired_interval(differences: list[float]) -> tuple[float, float | None, float | None]:
    """The mean of paired differences, their sd and the half-width of the paired t interval
    (95 %) of the mean (sd and half-width None for one difference)."""
    mean, sd = mean_sd(differences)
    if sd is None:
        return mean, None, None
    n = len(differences)
    return mean, sd, student_t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def paired(differences: list[float]) -> str:
    """Paired differences as ``mean ± sd``, with ``*`` where the paired t interval (95 %)
    excludes 0."""
    mean, sd, half_width = paired_interval(differences)
    if sd is None:
        return f"{mean:+.2f}"
    return f"{mean:+.2f} ± {sd:.2f}" + ("*" if abs(mean) > half_width else "")

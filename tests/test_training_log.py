"""The console line of training: its ETA keeps the days from 24 hours on."""

import pytest

from parsenet.engine.training.log import format_duration, progress_line


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0:00:00"),
        (245.9, "0:04:05"),  # the fraction of a second is dropped
        (86_399, "23:59:59"),
        (86_400, "1 day, 0:00:00"),
        (93_784, "1 day, 2:03:04"),
        (3 * 86_400 + 61, "3 days, 0:01:01"),
    ],
)
def test_format_duration(seconds: float, text: str):
    assert format_duration(seconds) == text


def test_the_eta_of_the_papers_20000_iterations_counts_days():
    # 5 s a step: 100,000 s left at the start, 1 day 3 h 46 min 40 s.
    values = {"train/loss": 1.5, "train/step_seconds": 5.0, "train/images_per_s": 4.0}
    line = progress_line(values, 0, 20_000, 1e-8)
    assert line == "iter 0/20000: loss 1.5000, base lr 1e-08, 4.0 img/s, ETA 1 day, 3:46:40"

"""The GPU checks' comparisons (tests/device_compare.py) on every commit: each bound holds where
the CPU stands in for the device, and fails on the fault it is there to catch. The GPU test
bodies themselves run with the CPU standing in (``PARSENET_GPU_TESTS_DEVICE=cpu``): a selection
in the device check's tiny CPU mode (tests/test_device_check.py), all of them here, marked
slow."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, compose_train
from device_compare import (
    AUTOCAST,
    FLOAT32,
    TF32,
    Bound,
    ConfusionComparison,
    Float64Copy,
    LabelComparison,
    ResumeComparison,
    ScoreComparison,
    StateComparison,
    assert_applied,
    near_ties,
    observed_training,
    tf32_copy,
    tf32_rounded,
)

from parsenet.engine.runtime.checkpoint import load_checkpoint
from parsenet.engine.training.trainer import Trainer
from parsenet.models import build_model

BOUNDS = [FLOAT32, TF32, *AUTOCAST.values()]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A 1/16-width ParseNet with random weights."""
    torch.manual_seed(0)
    return build_model({"backbone": {"width_mult": 0.0625}}, 21).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two random 48×64 images."""
    return torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def scores(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's float32 scores of the images."""
    with torch.no_grad():
        return model(images)


def compared(bound: Bound, got: torch.Tensor, expected: torch.Tensor) -> ScoreComparison:
    """``got`` against ``expected`` (N×K×H×W), image by image."""
    comparison = ScoreComparison(bound)
    for got_image, expected_image in zip(got, expected, strict=True):
        comparison.add(got_image, expected_image)
    return comparison


def test_tf32_rounding_keeps_ten_mantissa_bits():
    step = 2.0**-10  # TF32's spacing at 1
    values = torch.tensor([1 + step, 1 + step / 2, 1 + 3 * step / 2, 1 + step / 4, -3.0])
    expected = torch.tensor([1 + step, 1.0, 1 + 2 * step, 1.0, -3.0])  # ties to even
    assert torch.equal(tf32_rounded(values), expected)


def test_the_float32_bound_holds_for_rounding_and_fails_on_tf32(model, images, scores):
    with torch.no_grad():
        float64 = compared(FLOAT32, Float64Copy(model)(images), scores)
        tf32 = tf32_copy(model)(images)
    float64.check()  # float32 against float64: rounding only
    with pytest.raises(AssertionError, match="largest score difference"):
        compared(FLOAT32, tf32, scores).check()  # a device that used TF32 after all
    compared(TF32, tf32, scores).check()


def shifted(scores: torch.Tensor) -> torch.Tensor:
    """The scores one pixel to the right (a misaligned crop or upsampling)."""
    return scores.roll(1, dims=-1)


def swapped(scores: torch.Tensor) -> torch.Tensor:
    """Classes 0 and 1 swapped."""
    return scores[:, [1, 0, *range(2, scores.shape[1])]]


def not_finite(scores: torch.Tensor) -> torch.Tensor:
    """One score NaN (an fp16 overflow)."""
    broken = scores.clone()
    broken[0, 0, 0, 0] = float("nan")
    return broken


@pytest.mark.parametrize("fault", [shifted, swapped, not_finite])
@pytest.mark.parametrize("bound", BOUNDS, ids=lambda bound: bound.name)
def test_every_score_bound_fails_on_a_planted_fault(scores, bound: Bound, fault):
    compared(bound, scores.clone(), scores).check()
    with pytest.raises(AssertionError, match="largest score difference"):
        compared(bound, fault(scores), scores).check()


def test_the_autocast_bounds_hold_for_cpu_autocast(model, images, scores):
    with torch.no_grad():
        for amp, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            with torch.autocast("cpu", dtype=dtype):
                got = model(images).float()
            compared(AUTOCAST[amp], got, scores).check()


def test_near_ties_are_where_a_result_within_the_bound_can_differ():
    expected = torch.tensor([[10.0, 5.0, -10.0], [9.99, 1.0, -10.0]])[:, None, :]  # K=2, 1×3
    got = torch.tensor([[9.99, 5.0, -10.0], [10.0, 1.0, -10.0]])[:, None, :]  # pixel 0 flips
    assert near_ties(expected, TF32).tolist() == [[True, False, True]]  # margins up to 0.4
    comparison = ScoreComparison(TF32)
    comparison.add(got, expected)
    assert (comparison.differing, comparison.near_ties, comparison.pixels) == (1, 2, 3)
    comparison.check()


def test_the_confusion_comparison_fails_beyond_the_near_ties():
    expected = np.array([[50, 2], [3, 45]])
    ConfusionComparison(expected.copy(), expected, near_ties=0).check()
    moved = expected + np.array([[-2, 2], [1, -1]])  # 2 pixels 0 → 1, 1 pixel 1 → 0
    ConfusionComparison(moved, expected, near_ties=3).check()
    with pytest.raises(AssertionError, match="differ in 3 of 100 pixels"):
        ConfusionComparison(moved, expected, near_ties=2).check()
    dropped = expected - np.array([[1, 0], [0, 0]])  # one scored pixel lost
    with pytest.raises(AssertionError, match="99 scored on the device"):
        ConfusionComparison(dropped, expected, near_ties=10).check()


def test_the_label_comparison_fails_on_a_swapped_class(scores):
    expected = scores[0]
    labels = expected.argmax(0).numpy().astype(np.uint8)
    comparison = LabelComparison(TF32)
    comparison.add(labels, expected)
    comparison.check()
    seen = labels[0, 0]
    comparison.add(np.where(labels == seen, (seen + 1) % 21, labels), expected)  # a class swapped
    with pytest.raises(AssertionError, match="beyond a near tie"):
        comparison.check()


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoints of a 5-iteration CPU run, one per iteration (AdamW, fp16's scaler: the
    first three steps overflow at its starting scale and are skipped, the last two are taken)."""
    root = tmp_path_factory.mktemp("snapshots")
    settings = ["train.max_iters=5", "train.checkpoint_every=1", "train.keep_snapshots=5"]
    settings.append("train.eval_every=0")
    cfg = compose_train(root, *settings, "train.amp=fp16", "train.channels_last=false")
    Trainer(cfg, root / "run").run()
    return root / "run" / "checkpoints"


@pytest.mark.parametrize("operators", [(), ("adaptive_avg_pool2d_backward_cuda",)])
def test_the_resume_comparison_fails_one_step_off(snapshots: Path, operators: tuple[str, ...]):
    whole = load_checkpoint(snapshots / "last.pt")["model"]
    ResumeComparison(whole, copy.deepcopy(whole), operators).check()
    one_short = load_checkpoint(snapshots / "iter_000004.pt")["model"]
    with pytest.raises(AssertionError):
        ResumeComparison(whole, one_short, operators).check()


def perturbed_weight(state: dict) -> None:
    """One weight one float32 step away."""
    key = next(key for key, value in state["model"].items() if value.is_floating_point())
    value = state["model"][key]
    first = value.view(-1)[:1]
    first.copy_(torch.nextafter(first, torch.full_like(first, np.inf)))


def dropped_optimizer_state(state: dict) -> None:
    """Adam's moments lost on the way."""
    state["optimizer"]["state"] = {}


def iteration_off_by_one(state: dict) -> None:
    state["iteration"] += 1


def scaler_halved(state: dict) -> None:
    """fp16's loss scale not the one written."""
    state["scaler"]["scale"] /= 2


@pytest.mark.parametrize(
    "fault", [perturbed_weight, dropped_optimizer_state, iteration_off_by_one, scaler_halved]
)
def test_the_state_comparison_fails_on_anything_lost_or_changed(snapshots: Path, fault):
    written = load_checkpoint(snapshots / "last.pt")
    StateComparison(written, copy.deepcopy(written)).check()
    read = copy.deepcopy(written)
    fault(read)
    with pytest.raises(AssertionError, match="differences"):
        StateComparison(written, read).check()


def test_a_mode_that_was_ignored_fails_its_check(tmp_path: Path):
    """A plain float32 run is what a run that ignored bf16, fp16, channels_last or compile looks
    like: each check fails on it, and the float32 check passes."""
    trainer = Trainer(compose_train(tmp_path, "train.channels_last=false"), tmp_path / "run")
    batches = iter(trainer.train_loader())
    with observed_training(trainer) as observed:
        trainer.train_step(batches)
    assert_applied(observed, "float32")
    for mode in ("bf16", "fp16", "channels_last", "compile"):
        with pytest.raises(AssertionError, match=f"{mode} not applied"):
            assert_applied(observed, mode)


@pytest.mark.slow
def test_every_gpu_test_body_with_the_cpu_standing_in(tmp_path: Path):
    """All of tests/test_gpu.py with the CPU standing in for the device (about 10 minutes on
    2 cores; a selection runs on every commit in the device check's tiny CPU mode,
    tests/test_device_check.py)."""
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "gpu", "-q", "-n", "0"]
        + ["tests/test_gpu.py", f"--basetemp={tmp_path / 'pytest'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        env={
            **{key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")},
            "PARSENET_GPU_TESTS_DEVICE": "cpu",
        },
    )
    assert finished.returncode == 0, finished.stdout[-5000:] + finished.stderr[-3000:]
    assert " failed" not in finished.stdout and " passed" in finished.stdout

"""What the GPU machine's checks rely on, tested on the CPU: scripts/device_check.sh in its tiny
CPU mode (so the one command cannot rot), scripts/device_data.sh on a miniature CamVid, the
loader's worker count and the deterministic-algorithms switch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_train
from PIL import Image

from parsenet.data.loader import AUTO_WORKERS_MAX, loader_workers
from parsenet.engine.runtime.process import CUBLAS_WORKSPACE, deterministic_algorithms
from parsenet.engine.training.settings import TrainSettings
from parsenet.errors import ConfigError

CHECK_LINE = re.compile(r"^(PASS|FAIL|SKIP)  (\S.*?)  +(\S.*)$")


def test_tiny_cpu_device_check_ends_its_summary_with_one_line_per_check(tmp_path: Path):
    """The tiny CPU mode: the CPU stands in for the device in a selection of the GPU tests
    (tests/test_gpu.py), whose figures reach the summary, and the benchmark in miniature."""
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    env.pop("PARSENET_GPU_TESTS_DEVICE", None)
    finished = subprocess.run(
        ["bash", str(REPO / "scripts" / "device_check.sh"), "--device", "cpu", "--tiny"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=480,
        env=env,
    )
    assert finished.returncode == 0, finished.stdout[-5000:] + finished.stderr[-3000:]
    assert sorted(path.name for path in out.iterdir()) == [
        "benchmark.json",
        "benchmark.md",
        "device_check.log",
        "summary.txt",
    ]
    summary = (out / "summary.txt").read_text().splitlines()
    checks = summary[summary.index("") + 1 :]  # the header, a blank line, then the checks
    assert summary.index("") >= 1 and not CHECK_LINE.match(summary[0]) and len(checks) >= 14
    parsed = [CHECK_LINE.match(line) for line in checks]
    assert all(parsed), checks
    status = {match.group(2): match.group(1) for match in parsed}
    figure = {match.group(2): match.group(3) for match in parsed}
    tests = [name for name in status if name.startswith("test_")]
    assert len(tests) == 6 and {status[name] for name in tests} == {"PASS"}, checks
    for name in tests:  # what each measured, on its line
        if "precision_and_layout" in name:
            assert re.search(r"steps/s .* peak RSS \d+ MiB .*seen: autocast", figure[name]), name
        elif "resume" in name:
            assert "1 + resume + 1 = 2: weights bit-identical" in figure[name], figure[name]
        else:
            found = re.search(r"largest score difference (\S+) .*\(bound (\S+),", figure[name])
            assert found and float(found[1]) <= float(found[2]), figure[name]
    peak = figure["benchmark: float32 GEMM peak (no TF32)"]
    assert re.fullmatch(r"[\d.]+ [GT]FLOP/s \((torch\.mm|conv1x1)\)", peak), peak
    for name in (
        "benchmark: model step 32² batch 2 (float32, eager)",
        "benchmark: trainer on synthetic strips, crop 32 (eager)",
        "benchmark: trainer ÷ reference loop",
        "benchmark: inference 500×375",
    ):
        assert status[name] == "PASS", (name, figure.get(name))
    targets = [name for name in status if name.startswith("target: ")]
    assert len(targets) == 2 and {status[name] for name in targets} == {"SKIP"}
    assert "targets apply at full size on a GPU" in figure[targets[0]]
    assert checks[-1].startswith("PASS  device check duration")
    assert set(json.loads((out / "benchmark.json").read_text())) == {"eager"}
    assert "## eager" in (out / "benchmark.md").read_text()
    log = (out / "device_check.log").read_text()
    assert "gpu tests" in log and "benchmark eager" in log
    assert finished.stdout.rstrip().endswith("failed; summary: " + str(out / "summary.txt"))


def write_camvid(root: Path, counts: dict[str, int]) -> Path:
    """A miniature CamVid in the SegNet layout, the list files with the release's prefix."""
    for split, count in counts.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        lines = []
        for index in range(count):
            name = f"seq_{index:04d}.png"
            Image.new("RGB", (8, 6), (index, 0, 0)).save(root / split / name)
            Image.new("L", (8, 6), index % 12).save(root / f"{split}annot" / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_device_data_copies_an_evenly_spread_subset(tmp_path: Path):
    source = write_camvid(tmp_path / "camvid", {"train": 9, "val": 4})
    dest = tmp_path / "repo" / ".device_data" / "camvid"
    command = ["bash", str(REPO / "scripts" / "device_data.sh"), "--source", str(source)]
    command += ["--dest", str(dest), "--train", "3", "--val", "2"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    train = (dest / "train.txt").read_text().splitlines()
    assert [line.split()[0].rsplit("/", 1)[1] for line in train] == [
        "seq_0000.png",
        "seq_0003.png",
        "seq_0006.png",
    ]
    assert len((dest / "val.txt").read_text().splitlines()) == 2
    assert sorted(path.name for path in (dest / "trainannot").iterdir()) == [
        "seq_0000.png",
        "seq_0003.png",
        "seq_0006.png",
    ]
    from parsenet.data.camvid import camvid_dataset

    assert len(camvid_dataset(dest, "val")) == 2  # the loader reads the copy as it is


def test_auto_workers_follow_the_cpus_per_process(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers("auto") == AUTO_WORKERS_MAX == 12  # one GPU, 16 cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_workers("auto") == 2  # four processes share them
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert loader_workers("auto") == 1
    assert loader_workers(0) == 0 and loader_workers(3) == 3
    for bad in (-1, "four", 2.5, True, None):
        with pytest.raises(ConfigError, match=r"data\.num_workers=.* must be a whole number ≥ 0"):
            loader_workers(bad)


def test_auto_workers_in_a_training_config(tmp_path: Path):
    settings = TrainSettings.from_config(compose_train(tmp_path, "data.num_workers=auto"))
    assert settings.num_workers == loader_workers("auto") >= 1


def test_deterministic_algorithms_switch_on_and_restore():
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    saved_workspace = os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    try:
        with deterministic_algorithms(warn_only=True):
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        after = (
            torch.are_deterministic_algorithms_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        )
        assert after == before
    finally:
        if saved_workspace is not None:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved_workspace

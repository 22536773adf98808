"""scripts/device_fidelity.sh in its tiny CPU mode, on a CamVid fixture in the SegNet layout, so
the GPU machine's fidelity run cannot rot between the sessions that have a GPU."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import REPO
from PIL import Image

from parsenet.config import compose


def write_camvid(root: Path, counts: dict[str, int], size=(64, 48), seed=0) -> Path:
    """A CamVid folder as the SegNet release has it: split/ and splitannot/ PNGs (11 classes,
    11 = void) and split.txt with the release's absolute /SegNet/CamVid/… paths."""
    rng = np.random.default_rng(seed)
    width, height = size
    for split, count in counts.items():
        lines = []
        for index in range(count):
            name = f"{split}_{index:03d}.png"
            for folder, array in (
                (split, rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)),
                (f"{split}annot", rng.integers(0, 12, size=(height, width), dtype=np.uint8)),
            ):
                (root / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / folder / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def run_fidelity(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "device_fidelity.sh"), *arguments],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )


def test_tiny_cpu_fidelity_run_trains_both_rows_on_two_seeds(tmp_path: Path):
    data = write_camvid(tmp_path / "camvid", {"train": 4, "val": 2})
    out = tmp_path / "fidelity"
    finished = run_fidelity(
        tmp_path, "--device", "cpu", "--tiny", "--data", str(data), "--out", str(out)
    )
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-3000:]
    assert sorted(path.name for path in out.iterdir()) == [
        "device_fidelity.log",
        "runs",
        "summary.txt",
        "table.csv",
        "table.md",
    ]
    with (out / "table.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["seed"]]  # rows not run: no seed
    runs = sorted((row["experiment"], row["seed"]) for row in rows)
    assert runs == [
        ("parsenet-baseline_vgg16-os8_voc12aug", "0"),
        ("parsenet-baseline_vgg16-os8_voc12aug", "1"),
        ("parsenet_vgg16-os8_voc12aug", "0"),
        ("parsenet_vgg16-os8_voc12aug", "1"),
    ]
    for row in rows:
        assert 0 <= float(row["mIoU"]) <= 100
        assert 0 <= float(row["out of context"]) <= 100
    summary = (out / "summary.txt").read_text()
    assert "mode: device cpu, tiny; seeds 0,1; 4 iterations" in summary
    assert "(4 train, 2 val)" in summary and "every run finished" in summary
    assert "## Difference from the baseline" in summary
    assert (out / "runs" / "parsenet_vgg16-os8_voc12aug" / "seed_1" / "metrics.json").is_file()
    again = run_fidelity(
        tmp_path, "--device", "cpu", "--tiny", "--data", str(data), "--out", str(out)
    )
    assert again.returncode == 0, again.stdout[-3000:]
    assert (out / "device_fidelity.log").read_text().count("done before, keeping") == 4


def test_fidelity_without_images_is_one_line_and_touches_nothing(tmp_path: Path):
    out = tmp_path / "out"
    arguments = ["--device", "cpu", "--tiny", "--out", str(out), "--data", str(tmp_path)]
    finished = run_fidelity(tmp_path, *arguments)
    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == [
        f"error: --data {tmp_path}: no CamVid train.txt and val.txt there (the SegNet layout)"
    ]
    assert not out.exists()


def test_the_gpu_settings_compose_into_a_full_width_bf16_run(tmp_path: Path):
    """The full-size branch runs only on a GPU machine; its overrides are composed here so a
    renamed key cannot go unnoticed until then."""
    printed = run_fidelity(tmp_path, "--dry-run")
    assert printed.returncode == 0, printed.stderr
    overrides = printed.stdout.split()
    for row in ("parsenet-baseline_vgg16-os8_voc12aug", "parsenet_vgg16-os8_voc12aug"):
        cfg = compose("train", [f"experiment={row}", *overrides, f"data.root={tmp_path}"])
        assert cfg["model"]["backbone"]["width_mult"] == 1.0
        assert cfg["model"]["backbone"]["pretrained"] == "none"  # nothing to download there
        assert cfg["train"]["amp"] == "bf16" and cfg["train"]["channels_last"] is True
        assert cfg["device"] == "cuda" and cfg["optim"]["_target_"] == "torch.optim.AdamW"
        assert cfg["data"]["name"] == "camvid" and cfg["train"]["max_iters"] == 2000

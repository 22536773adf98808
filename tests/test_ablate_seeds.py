"""scripts/ablate.py --seeds: every row once per seed (resumable), mean ± sd per metric and class,
per-seed lines in table.csv, paired differences from the baseline row."""

import base64
import csv
import importlib.util
import io
import json
import re
import statistics
from pathlib import Path

import pytest
from conftest import REPO
from omegaconf import OmegaConf
from PIL import Image
from test_experiments import run_ablate, tiny_ablation

ROWS = ["parsenet_vgg16-os8_voc12aug", "parsenet-baseline_vgg16-os8_voc12aug"]
RELEASED, BASELINE = ROWS


def load_script():
    spec = importlib.util.spec_from_file_location("ablate", REPO / "scripts" / "ablate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_metrics(miou: float, background: float) -> dict:
    return {
        "mIoU": miou,
        "pixel_acc": 0.9,
        "mean_acc": 0.5,
        "fwIoU": 0.8,
        "out_of_context": 0.1,
        "class_set_accuracy": 0.5,
        "per_class_iou": {"background": background, "boat": None},
        "dataset": "synthetic",
        "split": "val",
    }


def assert_offline_page(page: str) -> None:
    """No script, nothing from the network, and every picture an inline PNG that decodes."""
    lowered = page.lower()
    assert "<script" not in lowered and "http://" not in lowered and "https://" not in lowered
    found = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert len(found) == page.count("<img ")
    for data in found:
        Image.open(io.BytesIO(base64.b64decode(data))).load()


def test_spread_and_paired_differences_by_hand():
    ablate = load_script()
    assert ablate.spread([40.0, 42.0, 44.0]) == "42.00 ± 2.00"  # sample sd (n − 1)
    assert ablate.spread([40.0]) == "40.00" and ablate.spread([]) == "–"
    # Differences 1.0, 1.2, 0.8: mean 1.0, sd 0.2; t(2) · 0.2 / √3 = 0.50 < 1.0 → beyond noise.
    assert ablate.paired([1.0, 1.2, 0.8]) == "+1.00 ± 0.20*"
    # Differences 3, −1, 1: mean 1, sd 2; 4.303 · 2 / √3 = 4.97 > 1 → within the noise.
    assert ablate.paired([3.0, -1.0, 1.0]) == "+1.00 ± 2.00"
    assert ablate.paired([-0.5]) == "-0.50"

    table = ablate.load_table("voc12")
    assert table["baseline"] == BASELINE
    # The released row beats the baseline by 1 point on every seed but the per-seed scores
    # themselves spread by 10 points: the paired difference sees through the seed noise.
    results = {
        BASELINE: {s: fake_metrics(m, 0.9) for s, m in {0: 0.30, 1: 0.40, 2: 0.50}.items()},
        RELEASED: {s: fake_metrics(m, 0.8) for s, m in {0: 0.31, 1: 0.41, 2: 0.51}.items()},
    }
    setup = {"command": "c", "overrides": [], "seeds": [0, 1, 2], "dataset": "d", "split": "v"}
    markdown = ablate.to_markdown(table, results, setup, BASELINE, ["background", "boat"])
    released_line = next(
        line for line in markdown.splitlines() if "(as released) | parsenet_" in line
    )
    assert "| 3 | 41.00 ± 10.00 |" in released_line
    difference = next(
        line
        for line in markdown.split("## Difference")[1].splitlines()
        if line.startswith("| ParseNet, late fusion")
    )
    assert difference.split(" | ")[1:3] == ["3", "+1.00 ± 0.00*"]
    assert "| background | 90.00 ± 0.00 | 80.00 ± 0.00 |" in markdown
    assert "| boat | – | – |" in markdown
    lines = ablate.csv_lines(table, results, ["background", "boat"])
    assert [(line["experiment"], line["seed"]) for line in lines if line["mIoU"]] == [
        (BASELINE, "0"), (BASELINE, "1"), (BASELINE, "2"),
        (RELEASED, "0"), (RELEASED, "1"), (RELEASED, "2"),
    ]  # fmt: skip


def test_the_paired_interval_takes_students_t_quantile_at_any_number_of_seeds():
    ablate = load_script()
    # Differences 3, 1, 5: mean 3, sd 2; t(2) · 2 / √3 = 4.97 > 3 (1.96 · 2 / √3 = 2.26 < 3).
    assert ablate.paired([3.0, 1.0, 5.0]) == "+3.00 ± 2.00"
    # 32 seeds: mean 0.36, sd 1.016; t(31) · 1.016 / √32 = 0.366 > 0.36 (1.96 gives 0.352).
    assert ablate.paired([1.36] * 16 + [-0.64] * 16) == "+0.36 ± 1.02"


def test_seeds_train_every_row_per_seed_resume_and_pair_with_the_baseline(tmp_path: Path):
    out = tmp_path / "table"
    overrides = tiny_ablation(tmp_path)
    command = ["voc12", "--out", str(out), "--rows", ",".join(ROWS), "--seeds", "0,1", *overrides]
    result = run_ablate(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    order = [line for line in result.stdout.splitlines() if line.endswith(": training")]
    assert order == [f"=== {row} seed={seed}: training" for seed in (0, 1) for row in ROWS]
    runs = {(row, seed): out / row / f"seed_{seed}" for row in ROWS for seed in (0, 1)}
    for (_, seed), run in runs.items():
        assert OmegaConf.load(run / ".hydra" / "config.yaml")["seed"] == seed

    with open(out / "table.csv") as handle:
        lines = list(csv.DictReader(handle))
    scored = [line for line in lines if line["mIoU"]]
    assert {(line["experiment"], line["seed"]) for line in scored} == {
        (row, str(seed)) for row in ROWS for seed in (0, 1)
    }
    assert {"out of context", "class-set acc", "IoU background", "IoU sign"} <= set(lines[0])
    for line in scored:
        metrics = json.loads(
            (runs[line["experiment"], int(line["seed"])] / "metrics.json").read_text()
        )
        assert line["mIoU"] == f"{100 * metrics['mIoU']:.2f}"
        assert line["out of context"] == f"{100 * metrics['out_of_context']:.2f}"
        assert line["class-set acc"] == f"{100 * metrics['class_set_accuracy']:.2f}"
        assert line["IoU boat"] == f"{100 * metrics['per_class_iou']['boat']:.2f}"
    early = [line for line in lines if line["experiment"] == "parsenet-early_vgg16-os8_voc12aug"]
    assert len(early) == 1 and early[0]["seed"] == early[0]["mIoU"] == ""  # not run

    def metric(row: str, seed: int, key: str) -> float:
        return 100 * json.loads((runs[row, seed] / "metrics.json").read_text())[key]

    markdown = (out / "table.md").read_text()
    released = [metric(RELEASED, seed, "mIoU") for seed in (0, 1)]
    mean, sd = statistics.fmean(released), statistics.stdev(released)
    assert f"| 2 | {mean:.2f} ± {sd:.2f} |" in markdown
    differences = [metric(RELEASED, s, "mIoU") - metric(BASELINE, s, "mIoU") for s in (0, 1)]
    mean, sd = statistics.fmean(differences), statistics.stdev(differences)
    section = markdown.split("## Difference from the baseline: ParseNet baseline")[1]
    assert f"| ParseNet, late fusion (as released) | 2 | {mean:+.2f} ± {sd:.2f}" in section
    assert "## IoU per class (%)" in markdown and "| background |" in markdown
    page = (out / "table.html").read_text()
    assert_offline_page(page)
    rows_table = page.split('<table id="rows">')[1].split("</table>")[0]
    assert f'<td class="num">{statistics.fmean(released):.2f} ± ' in rows_table
    differences_table = page.split('<table id="differences">')[1].split("</table>")[0]
    assert f"{mean:+.2f}</td>" in differences_table  # the released row's paired difference
    contrasts = page.split("Where the rows differ from the baseline")[1]
    assert "ParseNet, late fusion (as released) vs the baseline, seed 0" in contrasts
    drawn = re.findall(
        r'alt="([^"]+): (image|label|baseline prediction|row prediction)"', contrasts
    )
    assert drawn and len(drawn) % 4 == 0  # image | label | baseline | row per image

    # An interrupted run continues from its checkpoint; every other run is kept.
    kept = {key: (run / "metrics.json").stat().st_mtime_ns for key, run in runs.items()}
    del kept[BASELINE, 1]
    (runs[BASELINE, 1] / "metrics.json").unlink()
    (runs[RELEASED, 0] / "per_image.csv").unlink()  # as a run from before per_image.csv
    result = run_ablate(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    # Such a run is listed as such in table.html, not an error.
    page = (out / "table.html").read_text()
    assert "an older run without per-image scores" in page
    assert not re.findall(r'alt="[^"]+: row prediction"', page)
    assert f"{BASELINE} seed=1: unfinished run" in result.stdout and "resuming it" in result.stdout
    assert result.stdout.count("done before") == 3
    assert (runs[BASELINE, 1] / "metrics.json").is_file()
    assert {key: (runs[key] / "metrics.json").stat().st_mtime_ns for key in kept} == kept

    # Runs with and without --seeds, or a seed= override beside --seeds, are not mixed.
    unseeded = run_ablate("voc12", "--out", str(out), "--rows", ",".join(ROWS), *overrides)
    assert unseeded.returncode != 0 and "use another --out" in unseeded.stderr
    both = run_ablate(*command, "seed=4")
    assert both.returncode != 0 and "not as a seed= override" in both.stderr


@pytest.mark.parametrize("seeds", ["a,b", ","])
def test_bad_seeds_are_one_line_errors(seeds, tmp_path: Path):
    result = run_ablate("voc12", "--out", str(tmp_path), "--seeds", seeds)
    assert result.returncode != 0 and "error: --seeds" in result.stderr
    assert not (tmp_path / "ablation.json").exists()

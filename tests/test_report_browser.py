"""The HTML reports, opened in a real browser (headless Chromium, tests/browser.py): each loads
with no console error and no network request, every picture decodes, the per-class table holds
every class of the data config, and the screenshot is not blank.

Outside CI the tests skip with one line when no Chromium is installed
(``bash scripts/install_browser.sh`` installs it); in CI (``CI`` set) a missing browser fails.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from browser import PageCheck, find_browser, open_page
from PIL import Image
from test_experiments import run_ablate, tiny_ablation

from parsenet.config import compose
from parsenet.data import dataset_info


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium executable (see the module docstring)."""
    path = find_browser()
    if path is None:
        message = "headless Chromium not installed: bash scripts/install_browser.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def png_data_uri(colour: tuple[int, int, int]) -> str:
    """A 24×12 PNG of one colour as a ``data:`` URI."""
    buffer = io.BytesIO()
    Image.new("RGB", (24, 12), colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def assert_clean_page(page: PageCheck) -> None:
    """What every report must show a browser: no console error or network request, every
    picture decoded, something drawn."""
    assert page.errors == [], f"console errors: {page.errors}"
    assert page.requests == [], f"network requests: {page.requests}"
    undecoded = [image["alt"] for image in page.images if not image["decoded"]]
    assert undecoded == [], f"pictures that did not decode: {undecoded}"
    assert page.screenshot_spread() > 5, "the screenshot is blank"


def test_the_browser_check_sees_each_fault(tmp_path: Path, chromium: str):
    good = tmp_path / "good.html"
    picture = png_data_uri((200, 40, 40))
    good.write_text(
        "<!doctype html><title>ok</title><h1>A page</h1>"
        f'<img alt="red" src="{picture}">'
        '<table id="classes"><tr><th>class</th></tr><tr><td>sky</td></tr></table>'
    )
    page = open_page(good, chromium)
    assert_clean_page(page)
    assert page.table_with("classes")["rows"] == [["class"], ["sky"]]
    assert page.images == [{"alt": "red", "decoded": True, "width": 24}]

    faults = {  # each planted fault, and what of the page must show it
        "console": ("<h1>x</h1><script>console.error('planted')</script>", "errors"),
        "exception": ("<h1>x</h1><script>notDefined()</script>", "errors"),
        "request": ('<h1>x</h1><img alt="far" src="http://127.0.0.1:9/a.png">', "requests"),
        "undecoded": ('<h1>x</h1><img alt="broken" src="data:image/png;base64,AAAA">', "images"),
        "blank": ("", "screenshot"),
    }
    for name, (body, shown_by) in faults.items():
        page_path = tmp_path / f"{name}.html"
        page_path.write_text(f"<!doctype html><title>{name}</title>{body}")
        page = open_page(page_path, chromium)
        with pytest.raises(AssertionError):
            assert_clean_page(page)
        if shown_by == "images":
            assert not page.images[0]["decoded"]
        elif shown_by == "screenshot":
            assert page.screenshot_spread() == 0
        else:
            assert getattr(page, shown_by), f"{name}: nothing in page.{shown_by}"


@pytest.fixture(scope="module")
def ablation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A 2-row, 1-seed miniature ablation (each run's final evaluation writes its report.html,
    the table its table.html) and the class names of its data config."""
    tmp_path = tmp_path_factory.mktemp("ablation")
    overrides = tiny_ablation(tmp_path)
    out = tmp_path / "table"
    rows = ["parsenet_vgg16-os8_voc12aug", "parsenet-baseline_vgg16-os8_voc12aug"]
    result = run_ablate(
        "voc12", "--out", str(out), "--rows", ",".join(rows), "--seeds", "0", *overrides
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = compose("train", [f"experiment={rows[0]}", *overrides])["data"]
    return out, list(dataset_info(data).class_names)


def test_an_evaluation_report_opens_cleanly_in_a_browser(ablation, chromium: str):
    out, class_names = ablation
    report = out / "parsenet_vgg16-os8_voc12aug" / "seed_0" / "report.html"
    page = open_page(report, chromium)
    assert_clean_page(page)
    (out / "report_screenshot.png").write_bytes(page.screenshot)
    per_class = page.table_with("classes")["rows"]
    assert {row[0] for row in per_class[1:]} >= set(class_names)
    assert len(page.images) >= 2  # the confusion matrix and the worst images at least


def test_an_ablation_report_opens_cleanly_in_a_browser(ablation, chromium: str):
    out, _ = ablation
    page = open_page(out / "table.html", chromium)
    assert_clean_page(page)
    labels = [row[0] for row in page.table_with("rows")["rows"][1:]]
    assert {
        "ParseNet baseline (stride 8, no context)",
        "ParseNet, late fusion (as released)",
    } <= set(labels)  # and the rows not run, as such
    assert page.table_with("differences")["rows"][1:]
    (out / "table_screenshot.png").write_bytes(page.screenshot)
    assert any("row prediction" in image["alt"] for image in page.images)

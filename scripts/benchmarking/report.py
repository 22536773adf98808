"""The report: the environment a run was measured in, and its figures as markdown tables."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import albumentations
import cv2
import numpy as np
import torch
from PIL import Image

import parsenet
from parsenet.engine.runtime.memory_format import cache_path, device_name
from parsenet.report import write_json

# A part's own summary of its figures (markdown), printed after its table.
Summaries = dict[str, Callable[[dict[str, Any]], str]]


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """Versions, machine, threads and the command line."""
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now().isoformat(timespec="seconds"),
        "versions": {
            "parsenet": parsenet.__version__,
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "pillow": Image.__version__,
            "albumentations": albumentations.__version__,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_name(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
        },
        "threads": {"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads()},
        "layout_cache": str(cache_path()),
        "settings": {key: str(value) for key, value in vars(args).items()},
    }
    if args.device.startswith("cuda"):
        record["machine"]["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return record


def cpu_name() -> str:
    """The CPU model as the kernel reports it (the platform's guess elsewhere)."""
    return device_name(torch.device("cpu"))


def markdown(report: dict[str, Any], summaries: Summaries | None = None) -> str:
    """The report's figures as one markdown table per part, each followed by its summary where
    ``summaries`` has one for that part."""
    summaries = summaries or {}
    record = report["environment"]
    lines = [f"Command: `{record['command']}`", ""]
    for part, figures in report["results"].items():
        before, after = record["load_average_per_part"][part]
        lines += [
            f"### {part} (1-minute load average {before:.2f} → {after:.2f})",
            "",
            "| figure | median | unit | details |",
            "|---|---|---|---|",
        ]
        lines += [table_row(name, item) for name, item in figures.items()]
        lines.append("")
        if part in summaries:
            lines += [summaries[part](figures), ""]
    return "\n".join(lines)


def table_row(name: str, item: dict[str, Any]) -> str:
    """One figure as a markdown table row: name, median, unit and the derived values."""
    details = ", ".join(
        f"{key} {format_number(value)}"
        for key, value in item.items()
        if key not in ("median", "unit", "raw")
    )
    median = format_number(item.get("median"))
    return f"| {name} | {median} | {item.get('unit', '')} | {details} |"


def format_number(value: Any) -> str:
    """Three significant figures for floats, everything else as it is."""
    if value is None:
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_report(report: dict[str, Any], out: Path, summaries: Summaries | None = None) -> None:
    """``out/benchmark.json`` (everything) and ``out/benchmark.md`` (the tables, with the
    parts' ``summaries``); prints both."""
    write_json(out / "benchmark.json", report)
    table = markdown(report, summaries)
    (out / "benchmark.md").write_text(table + "\n")
    print(table)
    print(f"written: {out / 'benchmark.json'}, {out / 'benchmark.md'}")

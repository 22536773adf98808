"""Run one of the paper's tables, row by row, and write it beside the paper's numbers.

A table (``configs/ablation/TABLE.yaml``) lists experiments (``configs/experiment/*.yaml``), each
with the paper's number and where that number comes from. Every row is trained and evaluated with
the real CLI (``parsenet-train experiment=ROW OVERRIDES``) in ``OUT/ROW/``; then ``OUT/table.md``
and ``OUT/table.csv`` get mIoU, pixel accuracy, mean accuracy and fwIoU per row.

Rerunning the same command resumes: rows whose ``metrics.json`` exists are kept, a row that was
interrupted continues from its ``last.pt`` (``train.resume=auto``). Overrides apply to every
row, so a table can be run in miniature:

    python scripts/ablate.py voc12                                     # the paper's setting
    python scripts/ablate.py voc12 --out runs/ablate/camvid-mini data=camvid recipe=cpu_miniature
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from parsenet.config import config_dir
from parsenet.fileio import atomic_write
from parsenet.report import write_json

REPO = Path(__file__).resolve().parents[1]
TABLES = config_dir() / "ablation"
METRICS = (
    ("mIoU", "mIoU"),
    ("pixel_acc", "pixel acc"),
    ("mean_acc", "mean acc"),
    ("fwIoU", "fwIoU"),
)


def load_table(name: str) -> dict[str, Any]:
    """The table definition ``configs/ablation/<name>.yaml`` as plain containers."""
    path = TABLES / f"{name}.yaml"
    if not path.is_file():
        choices = ", ".join(sorted(p.stem for p in TABLES.glob("*.yaml")))
        raise SystemExit(f"error: no table {name!r} ({path}); choose one of {choices}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def check_same_setup(out: Path, setup: dict[str, Any]) -> None:
    """Refuse to mix rows trained with other overrides into one table."""
    record = out / "ablation.json"
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous["table"] != setup["table"] or previous["overrides"] != setup["overrides"]:
            raise SystemExit(
                f"error: {out} holds table {previous['table']} run with overrides "
                f"{previous['overrides']}; use another --out for {setup['table']} with "
                f"{setup['overrides']}"
            )


def run_row(experiment: str, overrides: list[str], run_dir: Path) -> None:
    """Train and evaluate one row with the real CLI (unless it finished before)."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        print(f"=== {experiment}: done before, keeping {metrics}", flush=True)
        return
    resume = []
    if (run_dir / "checkpoints" / "last.pt").is_file():
        print(f"=== {experiment}: unfinished run in {run_dir}, resuming it", flush=True)
        resume = ["train.resume=auto"]
    elif run_dir.exists():
        print(f"=== {experiment}: unfinished run in {run_dir}, training it again", flush=True)
        shutil.rmtree(run_dir)
    else:
        print(f"=== {experiment}: training", flush=True)
    command = [
        sys.executable,
        "-m",
        "parsenet.cli.train",
        f"experiment={experiment}",
        *overrides,
        *resume,
        f"hydra.run.dir={run_dir}",
    ]
    status = subprocess.run(command, cwd=REPO).returncode
    if status != 0:
        raise SystemExit(status)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def table_rows(table: dict[str, Any], results: dict[str, dict]) -> list[dict[str, str]]:
    """One flat record per row: our scores (in %), the paper's, and the paper's source."""
    rows = []
    for row in table["rows"]:
        ours = results.get(row["experiment"], {})
        record = {"row": row["label"], "experiment": row["experiment"]}
        record.update({label: _percent(ours.get(key)) for key, label in METRICS})
        paper = row.get("paper") or {}
        record.update({f"paper {label}": str(paper.get(key, "")) for key, label in METRICS})
        record["paper source"] = row["source"]
        rows.append(record)
    return rows


def to_markdown(table: dict[str, Any], rows: list[dict[str, str]], setup: dict) -> str:
    """The table as markdown, with what it was run on and the command."""
    columns = ["row", "experiment", *(label for _, label in METRICS), "paper mIoU", "paper source"]
    lines = [
        f"# {table['title']}",
        "",
        f"Command: `{setup['command']}`  ",
        f"Overrides for every row: `{' '.join(setup['overrides']) or '(none)'}`  ",
        f"Scored on: {setup['dataset']} {setup['split']} (whole-image, %)  ",
        f"Paper's setting: {table['paper_setting']}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(row[c] or "–" for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, str]]) -> str:
    """The table as CSV (all columns, including every paper metric)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main() -> int:
    """Run the table's rows that are not done yet, then write ``table.md`` and ``table.csv``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="a table in configs/ablation/ (voc12, siftflow, context60)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/ablate/TABLE)")
    parser.add_argument("--rows", help="comma-separated experiments to run (default: all)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every row")
    args = parser.parse_intermixed_args()
    table = load_table(args.table)
    out = args.out or REPO / "runs" / "ablate" / args.table
    names = [row["experiment"] for row in table["rows"]]
    chosen = args.rows.split(",") if args.rows else names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SystemExit(f"error: --rows {', '.join(unknown)} not in table {args.table}")
    setup = {
        "table": args.table,
        "overrides": args.overrides,
        "command": " ".join(["python scripts/ablate.py", *sys.argv[1:]]),
    }
    check_same_setup(out, setup)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ablation.json", {**setup, "started": datetime.now().isoformat()})
    for name in chosen:
        run_row(name, args.overrides, out / name)
    # The table shows every row finished in this folder (also by earlier --rows runs).
    results = {
        name: json.loads((out / name / "metrics.json").read_text())
        for name in names
        if (out / name / "metrics.json").is_file()
    }
    first = next(iter(results.values()))
    setup.update(dataset=first["dataset"], split=first["split"])
    rows = table_rows(table, results)
    for path, text in (
        (out / "table.md", to_markdown(table, rows, setup)),
        (out / "table.csv", to_csv(rows)),
    ):
        atomic_write(path, lambda handle, text=text: handle.write(text.encode()))
    print(to_markdown(table, rows, setup))
    print(f"tables: {out / 'table.md'}, {out / 'table.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

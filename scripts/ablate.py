"""Run one of the paper's tables, row by row and seed by seed, beside the paper's numbers.

A table (``configs/ablation/TABLE.yaml``) lists experiments (``configs/experiment/*.yaml``), each
with the paper's number and where that number comes from, and names its baseline row. Every row
is trained and evaluated with the real CLI (``parsenet-train experiment=ROW OVERRIDES``) in
``OUT/ROW/``; then ``OUT/table.md`` and ``OUT/table.csv`` get mIoU, pixel accuracy, mean
accuracy, fwIoU and the per-image context statistics (out of context, class-set accuracy) per row.

With ``--seeds 0,1,2`` every row is trained once per seed (``seed=S``, in ``OUT/ROW/seed_S/``,
all rows of one seed before the next seed): ``table.md`` gives each metric and each class's IoU
as mean ± standard deviation over the seeds, and each row's paired difference from the baseline
row (per seed, then mean ± standard deviation, ``*`` where its 95 % interval excludes 0);
``table.csv`` has one line per row and seed. ``OUT/table.html`` shows the same as a page: mIoU
bars (mean ± sd over seeds), the paired differences with their 95 % intervals, and for each row
against the baseline (same seed) the images whose per-image mIoU (``per_image.csv``) differs most
both ways, predicted again by the two checkpoints.

Rerunning the same command resumes: runs whose ``metrics.json`` exists are kept, a run that was
interrupted continues from its ``last.pt`` (``train.resume=auto``). Overrides apply to every
row, so a table can be run in miniature:

    python scripts/ablate.py voc12                                     # the paper's setting
    python scripts/ablate.py voc12 --out runs/ablate/camvid-mini data=camvid recipe=cpu_miniature
    python scripts/ablate.py voc12 --seeds 0,1,2 --out runs/ablate/camvid-mini-3 data=camvid \\
        recipe=cpu_miniature
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
from parsenet.html.ablation_report import AblationRow, write_ablation_report
from parsenet.report import SUMMARY_KEYS, write_json
from parsenet.seed_statistics import paired, paired_interval, spread

REPO = Path(__file__).resolve().parents[1]
TABLES = config_dir() / "ablation"
METRICS = SUMMARY_KEYS  # (metrics.json key, column title): the console tables' summary scores
PAPER_METRICS = tuple((k, t) for k, t in METRICS if k in ("mIoU", "pixel_acc", "mean_acc", "fwIoU"))
Results = dict[str, dict[Any, dict]]  # experiment → seed (None: no --seeds) → metrics.json


def load_table(name: str) -> dict[str, Any]:
    """The table definition ``configs/ablation/<name>.yaml`` as plain containers."""
    path = TABLES / f"{name}.yaml"
    if not path.is_file():
        choices = ", ".join(sorted(p.stem for p in TABLES.glob("*.yaml")))
        raise SystemExit(f"error: no table {name!r} ({path}); choose one of {choices}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def parse_seeds(text: str | None, overrides: list[str]) -> list[int] | None:
    """``--seeds 0,1,2`` as distinct integers in order (None without ``--seeds``)."""
    if text is None:
        return None
    if any(o.split("=", 1)[0].lstrip("+~") == "seed" for o in overrides):
        raise SystemExit("error: give the seeds with --seeds, not as a seed= override")
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds {text}: give integers separated by commas") from None
    if not seeds:
        raise SystemExit("error: --seeds needs at least one seed")
    return list(dict.fromkeys(seeds))


def check_same_setup(out: Path, setup: dict[str, Any]) -> None:
    """Refuse to mix rows trained with other overrides (or runs with and without ``--seeds``)
    into one table; other seeds of the same setup may be added."""
    record = out / "ablation.json"
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous["table"] != setup["table"] or previous["overrides"] != setup["overrides"]:
            raise SystemExit(
                f"error: {out} holds table {previous['table']} run with overrides "
                f"{previous['overrides']}; use another --out for {setup['table']} with "
                f"{setup['overrides']}"
            )
        if (previous.get("seeds") is None) != (setup["seeds"] is None):
            how = "without --seeds" if previous.get("seeds") is None else "with --seeds"
            raise SystemExit(f"error: {out} holds runs made {how}; use another --out")


def run_dir_of(out: Path, experiment: str, seed: int | None) -> Path:
    """Where one row (and seed) is trained: ``OUT/ROW`` or ``OUT/ROW/seed_S``."""
    return out / experiment if seed is None else out / experiment / f"seed_{seed}"


def run_row(experiment: str, overrides: list[str], run_dir: Path, seed: int | None = None) -> None:
    """Train and evaluate one row (with ``seed=S`` if given) with the real CLI, unless it
    finished before."""
    name = experiment if seed is None else f"{experiment} seed={seed}"
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        print(f"=== {name}: done before, keeping {metrics}", flush=True)
        return
    resume = []
    if (run_dir / "checkpoints" / "last.pt").is_file():
        print(f"=== {name}: unfinished run in {run_dir}, resuming it", flush=True)
        resume = ["train.resume=auto"]
    elif run_dir.exists():
        print(f"=== {name}: unfinished run in {run_dir}, training it again", flush=True)
        shutil.rmtree(run_dir)
    else:
        print(f"=== {name}: training", flush=True)
    command = [
        sys.executable,
        "-m",
        "parsenet.cli.train",
        f"experiment={experiment}",
        *overrides,
        *([] if seed is None else [f"seed={seed}"]),
        *resume,
        f"hydra.run.dir={run_dir}",
    ]
    status = subprocess.run(command, cwd=REPO).returncode
    if status != 0:
        raise SystemExit(status)


def run_seed(run_dir: Path) -> int | None:
    """The seed a run used, from its ``.hydra/config.yaml`` (None if unknown)."""
    config = run_dir / ".hydra" / "config.yaml"
    return OmegaConf.load(config).get("seed") if config.is_file() else None


def collect(out: Path, names: list[str], seeds: list[int] | None) -> Results:
    """The ``metrics.json`` of every finished run of the table's rows (also those finished by
    earlier commands with other ``--rows``), for the seeds asked for."""
    results: Results = {}
    for name in names:
        for seed in seeds or [None]:
            metrics = run_dir_of(out, name, seed) / "metrics.json"
            if metrics.is_file():
                key = run_seed(metrics.parent) if seed is None else seed
                results.setdefault(name, {})[key] = json.loads(metrics.read_text())
    return results


def percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def values_of(runs: dict[Any, dict], key: str, class_name: str | None = None) -> list[float]:
    """One metric (or one class's IoU) of every run, in %; runs without it are left out."""
    found = []
    for metrics in runs.values():
        value = metrics.get(key) if class_name is None else metrics[key].get(class_name)
        if value is not None:
            found.append(percent(value))
    return found


def csv_lines(table: dict[str, Any], results: Results, classes: list[str]) -> list[dict]:
    """One flat record per row and seed (one with empty scores for a row not run): our scores
    (in %), the paper's, the paper's source and our IoU per class."""
    lines = []
    for row in table["rows"]:
        paper = row.get("paper") or {}
        runs = results.get(row["experiment"]) or {"": {}}
        for seed, metrics in runs.items():
            record = {"row": row["label"], "experiment": row["experiment"]}
            record["seed"] = "" if seed is None else str(seed)
            for key, title in METRICS:
                value = percent(metrics.get(key))
                record[title] = "" if value is None else f"{value:.2f}"
            record.update({f"paper {t}": str(paper.get(k, "")) for k, t in PAPER_METRICS})
            record["paper source"] = row["source"]
            for name in classes:
                value = percent((metrics.get("per_class_iou") or {}).get(name))
                record[f"IoU {name}"] = "" if value is None else f"{value:.2f}"
            lines.append(record)
    return lines


def markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *("| " + " | ".join(cell or "–" for cell in row) + " |" for row in rows),
    ]


def to_markdown(
    table: dict[str, Any], results: Results, setup: dict, baseline: str, classes: list[str]
) -> str:
    """The table as markdown: scores per row (mean ± sd over seeds), the paired differences
    from the baseline row, the per-class IoU, what it was run on and the command."""
    seeds = setup["seeds"]
    rows = table["rows"]
    labels = {row["experiment"]: row["label"] for row in rows}
    over = (
        f"Seeds: {', '.join(map(str, seeds))} — each score is the mean ± standard deviation "
        "(n − 1) over the seeds a row finished (`seeds` column)  "
        if seeds
        else "One run per row (seed in table.csv)  "
    )
    lines = [
        f"# {table['title']}",
        "",
        f"Command: `{setup['command']}`  ",
        f"Overrides for every row: `{' '.join(setup['overrides']) or '(none)'}`  ",
        over,
        f"Scored on: {setup['dataset']} {setup['split']} (whole-image, %; out of context: the "
        "share of labelled pixels predicted as a class absent from their image, lower is "
        "better; class-set acc: the share of images whose predicted class set is exactly "
        "their true one)  ",
        f"Paper's setting: {table['paper_setting']}",
        "",
    ]
    columns = ["row", "experiment", "seeds", *(t for _, t in METRICS), "paper mIoU"]
    body = []
    for row in rows:
        runs = results.get(row["experiment"], {})
        body.append(
            [
                row["label"],
                row["experiment"],
                str(len(runs)) if runs else "",
                *(spread(values_of(runs, key)) for key, _ in METRICS),
                str((row.get("paper") or {}).get("mIoU", "")),
            ]
        )
    lines += markdown_table(
        [*columns, "paper source"], [[*b, r["source"]] for b, r in zip(body, rows, strict=True)]
    )

    base = results.get(baseline, {})
    lines += [
        "",
        f"## Difference from the baseline: {labels[baseline]} (`{baseline}`)",
        "",
        "Row minus baseline per seed (runs with the same seed paired), in points: mean ± "
        "standard deviation of the differences; `*` where the 95 % interval of the mean "
        "(paired t) excludes 0, i.e. the difference is larger than the seed-to-seed noise.",
        "",
    ]
    body = []
    for row in rows:
        name = row["experiment"]
        common = [seed for seed in results.get(name, {}) if seed in base]
        if name == baseline or not common:
            continue
        cells = []
        for key, _ in METRICS:
            differences = [
                percent(results[name][seed][key]) - percent(base[seed][key])
                for seed in common
                if results[name][seed].get(key) is not None and base[seed].get(key) is not None
            ]
            cells.append(paired(differences) if differences else "")
        body.append([row["label"], str(len(common)), *cells])
    if body:
        lines += markdown_table(["row", "seeds", *(f"Δ {t}" for _, t in METRICS)], body)
    else:
        lines.append("(no row shares a finished seed with the baseline yet)")

    finished = [row for row in rows if results.get(row["experiment"])]
    if classes and finished:
        lines += ["", "## IoU per class (%)", ""]
        body = [
            [
                name,
                *(
                    spread(values_of(results[r["experiment"]], "per_class_iou", name))
                    for r in finished
                ),
            ]
            for name in classes
        ]
        lines += markdown_table(["class", *(r["label"] for r in finished)], body)
    return "\n".join(lines) + "\n"


def report_rows(
    table: dict[str, Any], results: Results, baseline: str, out: Path, seeds: list[int] | None
) -> list[AblationRow]:
    """The rows as ``table.html`` shows them: mIoU per seed, the paper's, the paired difference
    from the baseline and the first seed both finished (with the two run folders)."""
    base = results.get(baseline, {})
    rows = []
    for row in table["rows"]:
        name = row["experiment"]
        runs = results.get(name, {})
        entry = AblationRow(
            row["label"], name, values_of(runs, "mIoU"), (row.get("paper") or {}).get("mIoU")
        )
        common = [seed for seed in runs if seed in base]
        if name != baseline and common:
            differences = [
                percent(runs[seed]["mIoU"]) - percent(base[seed]["mIoU"]) for seed in common
            ]
            entry.difference = (*paired_interval(differences), len(common))
            folder_seed = None if seeds is None else common[0]
            entry.runs = (
                common[0],
                run_dir_of(out, baseline, folder_seed),
                run_dir_of(out, name, folder_seed),
            )
        rows.append(entry)
    return rows


def to_csv(lines: list[dict]) -> str:
    """The per-run lines as CSV (all columns, including every paper metric)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(lines[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return buffer.getvalue()


def main() -> int:
    """Run the table's rows (and seeds) that are not done yet, then write ``table.md`` and
    ``table.csv``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="a table in configs/ablation/ (voc12, siftflow, context60)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/ablate/TABLE)")
    parser.add_argument("--rows", help="comma-separated experiments to run (default: all)")
    parser.add_argument("--seeds", help="comma-separated seeds: train every row once per seed")
    parser.add_argument(
        "--baseline", help="the row the others are compared with (default: the table's)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every row")
    args = parser.parse_intermixed_args()
    table = load_table(args.table)
    out = args.out or REPO / "runs" / "ablate" / args.table
    names = [row["experiment"] for row in table["rows"]]
    chosen = args.rows.split(",") if args.rows else names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SystemExit(f"error: --rows {', '.join(unknown)} not in table {args.table}")
    baseline = args.baseline or table.get("baseline") or names[0]
    if baseline not in names:
        raise SystemExit(f"error: baseline {baseline} is not a row of table {args.table}")
    seeds = parse_seeds(args.seeds, args.overrides)
    setup = {
        "table": args.table,
        "overrides": args.overrides,
        "seeds": seeds,
        "command": " ".join(["python scripts/ablate.py", *sys.argv[1:]]),
    }
    check_same_setup(out, setup)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ablation.json", {**setup, "started": datetime.now().isoformat()})
    # Seed-major: every row of one seed before the next, so an unfinished command leaves
    # complete, paired seeds.
    for seed in seeds or [None]:
        for name in chosen:
            run_row(name, args.overrides, run_dir_of(out, name, seed), seed)
    results = collect(out, names, seeds)
    first = next(iter(next(iter(results.values())).values()))
    setup.update(dataset=first["dataset"], split=first["split"])
    classes = list(first.get("per_class_iou") or {})
    markdown = to_markdown(table, results, setup, baseline, classes)
    for path, text in (
        (out / "table.md", markdown),
        (out / "table.csv", to_csv(csv_lines(table, results, classes))),
    ):
        atomic_write(path, lambda handle, text=text: handle.write(text.encode()))
    notes = [
        f"Command: {setup['command']}",
        f"Overrides for every row: {' '.join(setup['overrides']) or '(none)'}",
        f"Scored on: {setup['dataset']} {setup['split']}; paper's setting: "
        f"{table['paper_setting']}",
    ]
    rows = report_rows(table, results, baseline, out, seeds)
    write_ablation_report(out / "table.html", table["title"], notes, rows, baseline)
    print(markdown)
    print(f"tables: {out / 'table.md'}, {out / 'table.csv'}, {out / 'table.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

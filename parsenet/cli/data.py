"""``parsenet-data``: prepare, verify and look at datasets.

    parsenet-data prepare voc|sbd|context|siftflow|camvid [--root data] [--downloads DIR]
                  [--mirror URL] [--allow-partial]
    parsenet-data verify DATASET [--root PATH] [--classes FILE] [--split NAME ...]
    parsenet-data show DATASET [--root PATH] [--n 8] [--split NAME] [--seed 0] [--out FILE]

DATASET is a ``configs/data/`` name (voc, voc_aug, context59, context60, siftflow, camvid,
folder, synthetic); its config gives the splits and, without ``--root``, the folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from parsenet.cli.arguments import ArgumentParser
from parsenet.cli.common import fail
from parsenet.config import compose, config_names
from parsenet.data import build_dataset, dataset_info
from parsenet.data.prepare import PREPARERS
from parsenet.data.prepare import prepare as prepare_dataset
from parsenet.data.show import dataset_grid
from parsenet.data.verify import format_report, verify_dataset
from parsenet.errors import ConfigError, ParsenetError
from parsenet.visualize import save_png

DATASETS = [name for name in config_names("data") if name != "from_checkpoint"]
VERIFY_FAILED = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ROOT_RELATIVE_KEYS = ("classes",)  # data keys that name a file under data.root


def command_data_config(name: str, root: str | None, classes: str | None = None) -> dict[str, Any]:
    """The ``data`` node of ``configs/data/<name>.yaml`` as training composes it, with the root
    (and the class file of ``folder``) replaced where given.

    The paths are set in the composed dict, never passed as Hydra overrides: a folder name with
    parentheses, commas or quotes is legal on disk but not in Hydra's override grammar.
    """
    try:
        cfg = compose("train", [f"data={name}"])["data"]
    except ConfigError as error:
        fail(str(error))
    if root is not None:
        cfg = with_root(cfg, user_path(root))
    if classes is not None:
        cfg["classes"] = str(user_path(classes))
    return cfg


def user_path(text: str) -> Path:
    """A path typed on the command line: ``~`` expanded, made absolute."""
    return Path(text).expanduser().resolve()


def with_root(cfg: dict[str, Any], root: Path) -> dict[str, Any]:
    """``cfg`` with ``root`` replaced; files the config keeps under its root (``folder``'s
    ``classes: ${.root}/classes.yaml``) move with it, as a ``data.root=`` override would."""
    old_root = Path(cfg["root"])
    moved = {
        key: str(root / Path(cfg[key]).relative_to(old_root))
        for key in ROOT_RELATIVE_KEYS
        if isinstance(cfg.get(key), str) and Path(cfg[key]).is_relative_to(old_root)
    }
    return {**cfg, **moved, "root": str(root)}


def run_prepare(args: argparse.Namespace) -> None:
    """Download, check and convert one dataset under ``--root``."""
    root = Path(args.root)
    downloads = Path(args.downloads) if args.downloads else root / "downloads"
    preparer = PREPARERS[args.dataset]
    prepare_dataset(preparer, root, downloads, args.mirror, args.allow_partial)
    name, where = preparer.config, root / preparer.config_root
    print(f"prepared {args.dataset} under {root}")
    print(f"check it:    parsenet-data verify {name} --root {where}")
    print(f"train on it: parsenet-train data={name} data.root={where}")


def run_verify(args: argparse.Namespace) -> None:
    """Check every pair; exit with status 1 when anything is wrong."""
    cfg = command_data_config(args.dataset, args.root, args.classes)
    splits = args.split or list(dict.fromkeys([cfg["train_split"], cfg["val_split"]]))
    reports = verify_dataset(cfg, splits, args.workers)
    print(format_report(dataset_info(cfg), cfg["root"], reports))
    if any(report.problems for report in reports):
        sys.exit(VERIFY_FAILED)


def run_show(args: argparse.Namespace) -> None:
    """Write a grid of samples with their labels coloured by the dataset's palette."""
    if args.out and Path(args.out).suffix.lower() not in IMAGE_SUFFIXES:
        fail(f"--out {args.out}: write a {', '.join(IMAGE_SUFFIXES)} file")
    cfg = command_data_config(args.dataset, args.root, args.classes)
    split = args.split or cfg["train_split"]
    grid = dataset_grid(build_dataset(cfg, split), args.n, args.seed, args.columns)
    out = save_png(grid, args.out or f"{args.dataset}_{split}_samples.png")
    print(f"wrote {out} ({grid.shape[1]}×{grid.shape[0]})")


def positive_int(text: str) -> int:
    """An argparse type: a whole number ≥ 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 1")
    return int(text)


def parser() -> ArgumentParser:
    """The command line of ``parsenet-data``."""
    main_parser = ArgumentParser(prog="parsenet-data", description=__doc__.split("\n")[0])
    commands = main_parser.add_subparsers(dest="command", required=True)

    prep = commands.add_parser("prepare", help="download, check and convert a public dataset")
    prep.add_argument("dataset", choices=sorted(PREPARERS))
    prep.add_argument("--root", default="data", help="folder to write the dataset under")
    prep.add_argument("--downloads", help="folder for the archives (default ROOT/downloads)")
    prep.add_argument("--mirror", help="base URL to fetch the archives' file names from")
    prep.add_argument(
        "--allow-partial", action="store_true", help="accept splits smaller than published"
    )
    prep.set_defaults(run=run_prepare)

    for name, run, text in (
        ("verify", run_verify, "check every image/label pair of a dataset"),
        ("show", run_show, "draw samples with their labels into a PNG"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("dataset", choices=DATASETS)
        command.add_argument("--root", help="dataset folder (default: the config's data.root)")
        command.add_argument("--classes", help="data=folder: the YAML file of class names")
        command.set_defaults(run=run)
    verify_parser, show_parser = commands.choices["verify"], commands.choices["show"]
    verify_parser.add_argument("--split", action="append", help="split(s) to check")
    verify_parser.add_argument("--workers", type=positive_int, default=4, help="decoding threads")
    show_parser.add_argument("--split", help="split to draw from (default: the training split)")
    show_parser.add_argument("--n", type=positive_int, default=8, help="number of samples")
    show_parser.add_argument("--seed", type=int, default=0, help="which samples")
    show_parser.add_argument("--columns", type=positive_int, default=2, help="samples per row")
    show_parser.add_argument("--out", help="PNG to write (default DATASET_SPLIT_samples.png)")
    return main_parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``parsenet-data``."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        args.run(args)
    except ParsenetError as error:
        fail(" ".join(str(error).split()))
    except OSError as error:  # the file system: an unwritable root, a full disk, …
        where = f" {error.filename}" if error.filename else ""
        fail(f"cannot use{where}: {error.strerror or error}; check --root, --downloads and --out")
    except KeyboardInterrupt:
        fail("interrupted; run the command again (a download continues where it stopped)")


if __name__ == "__main__":
    main()

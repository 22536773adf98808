"""What every Hydra command shares: finding the configs, one-line errors, plain-dict configs."""

from __future__ import annotations

import functools
import logging
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from parsenet.config import compose, config_dir, config_error_message
from parsenet.engine.distributed import DistContext, broadcast_object
from parsenet.errors import ConfigError, ParsenetError

USAGE_ERROR = 2
MULTIRUN_FLAGS = {"-m", "--multirun"}
CONFIG_DIR_FLAGS = {"--config-dir", "-cd"}

Task = Callable[[dict[str, Any], Path], None]


def fail(message: str) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def one_line(error: BaseException) -> str:
    """The user-facing line of an error.

    Errors raised inside DataLoader workers arrive re-wrapped with the worker's traceback in the
    message; their last line holds the original message.
    """
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = re.sub(r"^[\w.]+Error: ", "", last)
    return " ".join(text.split())


def first_of_each_sweep(overrides: list[str]) -> list[str]:
    """The overrides of a multirun's first job (``model=parsenet,fcn`` → ``model=parsenet``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [
        f"{override.get_key_element()}={next(override.sweep_string_iterator())}"
        if override.is_sweep_override()
        else override.input_line
        for override in OverridesParser.create().parse_overrides(overrides)
    ]


def check_config(config_name: str, overrides: list[str], config_dirs: list[str]) -> None:
    """Compose and resolve the config with these overrides (and the user's config folders); exit
    with one line if that fails.

    For a multirun the first job's overrides stand for all (a wrong key is wrong in every job).
    """
    try:
        compose(config_name, first_of_each_sweep(overrides), config_dirs)
    except ConfigError as error:
        fail(str(error))


def remove_if_only_hydra_files(run_dir: Path) -> None:
    """Delete a run folder that holds nothing but what Hydra wrote at start (config and log), so a
    run that failed before producing anything leaves nothing behind."""
    hydra_files = {".hydra", f"{HydraConfig.get().job.name}.log"}
    if run_dir.is_dir() and {entry.name for entry in run_dir.iterdir()} <= hydra_files:
        shutil.rmtree(run_dir, ignore_errors=True)


def share_run_dir(run_dir: Path, context: DistContext) -> Path:
    """Rank 0's run folder in every process; the folder Hydra made for another rank (its config
    files only) is removed, and only rank 0 keeps logging to a file and below warnings."""
    shared = Path(broadcast_object(str(run_dir), context))
    if not context.is_main:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler):
                root.removeHandler(handler)
                handler.close()
        root.setLevel(logging.WARNING)
        if shared != run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
    return shared


def config_dir_arguments(arguments: list[str]) -> tuple[list[str], list[str]]:
    """Split off Hydra's ``--config-dir DIR`` / ``-cd DIR`` / ``--config-dir=DIR`` (the user's
    own config folders): returns (those folders, the other arguments)."""
    folders: list[str] = []
    rest: list[str] = []
    pending = False
    for argument in arguments:
        if pending:
            folders.append(argument)
            pending = False
        elif argument in CONFIG_DIR_FLAGS:
            pending = True
        elif argument.startswith("--config-dir="):
            folders.append(argument.partition("=")[2])
        else:
            rest.append(argument)
    return folders, rest


def opened(arguments: list[str], nodes: tuple[str, ...]) -> list[str]:
    """Overrides of keys under ``nodes`` (``data.root=…``) as Hydra's add-or-override
    (``++data.root=…``): those nodes start empty and take their keys from a checkpoint, which
    checks them (see :func:`parsenet.loading.lay_over`)."""

    def is_key_of_node(argument: str) -> bool:
        key = argument.partition("=")[0]
        return "=" in argument and "." in key and key.partition(".")[0] in nodes

    return [f"++{argument}" if is_key_of_node(argument) else argument for argument in arguments]


def hydra_command(
    config_name: str, open_nodes: tuple[str, ...] = ()
) -> Callable[[Task], Callable[[], None]]:
    """Turn ``task(cfg, run_dir)`` into a console-script ``main`` driven by ``configs/<name>.yaml``.

    Overrides are checked before Hydra starts (with the user's ``--config-dir`` folders), so a
    wrong key or value ends in one line instead of Hydra's multi-line report; a
    :class:`~parsenet.errors.ParsenetError` raised by the task (missing data, bad file, wrong
    checkpoint) also ends in one line with exit status 2. The task receives the resolved config as
    plain dicts and the run folder. Keys under ``open_nodes`` may be any key (see :func:`opened`).
    """

    def decorate(task: Task) -> Callable[[], None]:
        def run(cfg: DictConfig) -> None:
            run_dir = Path(HydraConfig.get().runtime.output_dir)
            try:
                task(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True), run_dir)
            except ParsenetError as error:
                remove_if_only_hydra_files(run_dir)
                fail(one_line(error))
            except OmegaConfBaseException as error:
                remove_if_only_hydra_files(run_dir)
                fail(config_error_message(error))

        @functools.wraps(task)
        def main() -> None:
            sys.argv[1:] = opened(sys.argv[1:], open_nodes)
            folders, arguments = config_dir_arguments(sys.argv[1:])
            flags = {argument for argument in arguments if argument.startswith("-")}
            if flags <= MULTIRUN_FLAGS:  # other flags (--help, --cfg job, …) go to Hydra as is
                check_config(config_name, [a for a in arguments if a not in flags], folders)
            hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(
                run
            )()

        return main

    return decorate

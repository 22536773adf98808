"""What every Hydra command shares: finding the configs, one-line errors, plain-dict configs."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from parsenet.cli.run_folder import RunFolder
from parsenet.config import compose, config_dir, config_error_message, run_folder
from parsenet.engine.runtime.distributed import DistContext, broadcast_object
from parsenet.errors import ConfigError, ParsenetError

USAGE_ERROR = 2
INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C
MULTIRUN_FLAGS = {"-m", "--multirun"}
CONFIG_DIR_FLAGS = {"--config-dir", "-cd"}
RUN_DIR_KEY = "hydra.run.dir"
# What a shell changes inside double quotes: expansions, history, and these escapes.
CHANGED_IN_DOUBLE_QUOTES = re.compile(r'["$`!]|\\[$`"\\\n]|\\$')

Task = Callable[[dict[str, Any], Path], None]
Check = Callable[[dict[str, Any]], object]  # a command's checks of its composed config


def fail(message: str) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def interrupted() -> NoReturn:
    """Ctrl-C: one line on stderr and the shell's status for an interrupted command."""
    print("error: interrupted; nothing half-written was left", file=sys.stderr)
    sys.exit(INTERRUPTED)


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


def parsed_overrides(overrides: list[str]) -> list[Any]:
    """Hydra's reading of the overrides; one that its grammar rejects is a :class:`ConfigError`
    saying how to quote it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for override in overrides:
        try:
            parsed += parser.parse_overrides([override])
        except OverrideParseException:
            raise ConfigError(
                f"cannot read the override {override}: type it as {typed_quoted(override)} "
                "(Hydra reads characters such as ( ) , [ ] { } ' in a value)"
            ) from None
    return parsed


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The overrides of every job of a multirun, in Hydra's order (``model=parsenet,fcn
    seed=0,1`` → four jobs, ``model=parsenet seed=0`` first)."""
    return [list(job) for job in itertools.product(*map(job_values, parsed_overrides(overrides)))]


def job_values(override: Any) -> list[str]:
    """One override as each job of a multirun gets it (``seed=0,1`` → ``seed=0``, ``seed=1``);
    a sweep Hydra's basic sweeper cannot list (``interval()``) is a :class:`ConfigError`."""
    if not override.is_sweep_override():
        return [override.input_line]
    if not override.is_discrete_sweep():
        raise ConfigError(
            f"{override.input_line}: a multirun takes lists (a,b), range() and glob(); "
            "interval() needs a sweeper plugin (e.g. Optuna), which parsenet does not install"
        )
    return [f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()]


def check_every_job(
    config_name: str, overrides: list[str], config_dirs: list[str], check: Check | None
) -> None:
    """Compose every job of a multirun and run the command's own ``check`` on it, so that a
    value any job would refuse ends the sweep in one line before its first job starts.

    Raises:
        ConfigError: the first refused value, with the job's number and swept values.
    """
    jobs = sweep_jobs(overrides)
    for number, job in enumerate(jobs, start=1):
        try:
            cfg = compose(config_name, job, config_dirs)
            if check is not None:
                check(cfg)
        except ConfigError as error:
            swept = " ".join(item for item in job if item not in overrides)
            raise ConfigError(f"{error} (multirun job {number} of {len(jobs)}: {swept})") from None


def refuse_sweeps(overrides: list[str]) -> None:
    """Outside a multirun a list of values (``data.root=/a,b``) is a :class:`ConfigError` that
    says how to pass the comma as part of the value."""
    for override in parsed_overrides(overrides):
        if override.is_sweep_override():
            raise ConfigError(
                f"{override.input_line}: a comma separates runs of a sweep; to keep it in the "
                f"value type {typed_quoted(override.input_line)}, or add -m to run each value"
            )


def quoted(value: str) -> str:
    """``value`` as a single-quoted Hydra override value (any character allowed): a quote is
    escaped, and so is each backslash before a quote or at the end (Hydra reads other
    backslashes as they are)."""
    return "'" + re.sub(r"(\\*)('|$)", lambda found: escaped_run(*found.groups()), value) + "'"


def escaped_run(backslashes: str, quote: str) -> str:
    """A run of backslashes before a quote (or the end of a quoted value), as Hydra reads it
    back: each backslash doubled, the quote escaped."""
    return backslashes * 2 + ("\\" + quote if quote else "")


def typed_quoted(override: str) -> str:
    """``key=value`` as the user types it so that Hydra reads ``value`` as it is: the value
    quoted for Hydra (:func:`quoted`), the whole one shell word (see :func:`shell_word`)."""
    key, _, value = override.partition("=")
    return shell_word(f"{key}={quoted(value)}")


def shell_word(text: str) -> str:
    """``text`` as one POSIX shell word: in double quotes where they keep it as it is (easier to
    read: ``"data.root='/My Data (copy)'"``), else as :func:`shlex.quote` writes it."""
    return shlex.quote(text) if CHANGED_IN_DOUBLE_QUOTES.search(text) else f'"{text}"'


def prepared_run_folder(
    config_name: str, overrides: list[str], config_dirs: list[str]
) -> RunFolder:
    """Check the overrides, then choose, check and lock the folder this single run writes
    into (before Hydra writes its config there)."""
    refuse_sweeps(overrides)
    path, log_name = run_folder(config_name, overrides, config_dirs)
    return RunFolder(path, log_name, owner=os.environ.get("RANK", "0") == "0").open()


def os_error_line(error: OSError) -> str:
    """One line for a file-system error (disk full, permissions, …)."""
    where = f"cannot write {error.filename}: " if error.filename else ""
    return (
        f"{where}{error.strerror or error}; free some space or fix the permissions, or choose "
        "another folder (hydra.run.dir=PATH)"
    )


def remove_if_only_hydra_files(run_dir: Path) -> None:
    """Delete a run folder that holds nothing but what Hydra wrote at start (config and log), so a
    run that failed before producing anything leaves nothing behind (multiruns; a single run's
    folder is a :class:`RunFolder`)."""
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
    config_name: str, open_nodes: tuple[str, ...] = (), check: Check | None = None
) -> Callable[[Task], Callable[[], None]]:
    """Turn ``task(cfg, run_dir)`` into a console-script ``main`` driven by ``configs/<name>.yaml``.

    Overrides are checked before Hydra starts (with the user's ``--config-dir`` folders), so a
    wrong key or value ends in one line instead of Hydra's multi-line report; a
    :class:`~parsenet.errors.ParsenetError` raised by the task (missing data, bad file, wrong
    checkpoint) also ends in one line with exit status 2. The task receives the resolved config as
    plain dicts and the run folder. Keys under ``open_nodes`` may be any key (see :func:`opened`).
    ``check`` is the command's own check of its settings (ranges of numbers), which its task also
    runs: a multirun runs it on every job before the first starts (see :func:`check_every_job`).
    """

    def decorate(task: Task) -> Callable[[], None]:
        def run(cfg: DictConfig, folder: RunFolder | None) -> None:
            run_dir = Path(HydraConfig.get().runtime.output_dir)

            def undo() -> None:
                if folder is not None:
                    folder.failed()
                else:
                    remove_if_only_hydra_files(run_dir)

            try:
                task(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True), run_dir)
                if folder is not None:
                    folder.completed = True
            except ParsenetError as error:
                undo()
                fail(one_line(error))
            except OmegaConfBaseException as error:
                undo()
                fail(config_error_message(error))
            except OSError as error:
                undo()
                fail(os_error_line(error))
            except KeyboardInterrupt:
                undo()
                interrupted()

        @functools.wraps(task)
        def main() -> None:
            sys.argv[1:] = opened(sys.argv[1:], open_nodes)
            folders, arguments = config_dir_arguments(sys.argv[1:])
            flags = {argument for argument in arguments if argument.startswith("-")}
            overrides = [argument for argument in arguments if argument not in flags]
            folder = None
            try:
                if not flags:
                    folder = prepared_run_folder(config_name, overrides, folders)
                elif flags <= MULTIRUN_FLAGS:  # other flags (--help, --cfg job, …) go to Hydra
                    check_every_job(config_name, overrides, folders, check)
            except ParsenetError as error:
                fail(str(error))
            if folder is not None:  # Hydra writes into exactly the folder that was locked
                kept = [a for a in sys.argv[1:] if a.partition("=")[0] != RUN_DIR_KEY]
                sys.argv[1:] = [*kept, f"{RUN_DIR_KEY}={quoted(str(folder.path))}"]
            try:
                hydra.main(
                    config_path=str(config_dir()), config_name=config_name, version_base="1.3"
                )(functools.partial(run, folder=folder))()
            except KeyboardInterrupt:  # while Hydra starts or finishes, outside the task
                if folder is not None and not folder.completed:
                    folder.failed()
                interrupted()
            finally:
                if folder is not None:
                    folder.close()

        return main

    return decorate

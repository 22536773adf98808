"""The configs shipped with parsenet, and composing them into plain dicts (one error policy).

The ``configs/`` tree of the repository is installed as the package ``parsenet.configs`` (see
``setup.cfg``), so an installed wheel has the same configs as a checkout. Users add their own
config folders with ``config_dirs`` here, or Hydra's ``--config-dir`` on the command line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from parsenet.errors import ConfigError

# Keys renamed since a release, per command: old key (and every key under it) → new key. Typing
# one, or a config file setting one, is an error line naming the new key.
EVAL_RENAMES = {"mode": "inference.mode", "slide": "inference.slide", "msflip": "inference.msflip"}
RENAMED_KEYS = {"train": {"train.eval": "inference"}, "eval": EVAL_RENAMES, "predict": EVAL_RENAMES}


def config_dir() -> Path:
    """The folder of the shipped configs (``train.yaml``, ``model/``, ``data/``, …): the
    installed package ``parsenet.configs`` (a wheel or an editable install), else the
    ``configs/`` folder beside the package in a checkout that is only on ``sys.path``."""
    try:
        return Path(str(resources.files("parsenet.configs")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "configs"


def config_names(group: str) -> list[str]:
    """The config names of one group (``data`` → ``camvid``, ``voc``, …), sorted."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


def shipped(group: str, name: str) -> dict[str, Any]:
    """The values of one shipped config file (``configs/<group>/<name>.yaml``, without its
    defaults list), for code that needs them outside a composed config: the file stays their
    one owner (e.g. :class:`~parsenet.engine.scoring.inference.InferenceMode`'s defaults)."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(OmegaConf.load(config_dir() / group / f"{name}.yaml"))
    values.pop("defaults", None)
    return values


def new_name(name: str, key: str) -> str | None:
    """The new name of ``key`` if command ``name`` renamed it (``train.eval.slide.crop`` →
    ``inference.slide.crop``), else None."""
    for old, new in RENAMED_KEYS.get(name, {}).items():
        if key == old or key.startswith(f"{old}."):
            return new + key.removeprefix(old)
    return None


def renamed_key_line(old: str, new: str, value: str | None = None) -> str:
    """``old was renamed: use …``, with the override to type when ``value`` is known (a mode is
    also a choice of the ``inference`` group: ``inference=slide``)."""
    if value is None:
        return f"{old} was renamed: use {new}"
    if new == "inference.mode":
        return f"{old} was renamed: use inference={value} (or inference.mode={value})"
    return f"{old} was renamed: use {new}={value}"


def refuse_renamed_overrides(name: str, overrides: Sequence[str]) -> None:
    """A :class:`ConfigError` naming the new key for the first override of a renamed key
    (``train.eval.mode=slide``, ``+slide.crop=256``, …)."""
    for override in overrides:
        key, has_value, value = override.lstrip("+~").partition("=")
        renamed = new_name(name, key)
        if renamed is not None:
            raise ConfigError(renamed_key_line(key, renamed, value if has_value else None))


def refuse_renamed_nodes(name: str, cfg: Any) -> None:
    """A :class:`ConfigError` naming the new key when a composed config (from the user's own
    config files) still sets a renamed one."""
    from omegaconf import OmegaConf

    for old, new in RENAMED_KEYS.get(name, {}).items():
        if OmegaConf.select(cfg, old) is not None:
            raise ConfigError(renamed_key_line(old, new))


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def refuse_non_finite(values: Any, key: str = "") -> None:
    """A :class:`ConfigError` naming the first setting in a resolved config (plain dicts and
    lists) that is NaN or infinite: no setting of any command takes one."""
    if isinstance(values, dict):
        for name, value in values.items():
            refuse_non_finite(value, f"{key}.{name}" if key else str(name))
    elif isinstance(values, list):
        for index, value in enumerate(values):
            refuse_non_finite(value, f"{key}[{index}]")
    elif isinstance(values, float) and not math.isfinite(values):
        raise ConfigError(f"{key}={values} must be a finite number (no setting takes nan or inf)")


def config_error_message(error: Exception) -> str:
    """Turn a Hydra/OmegaConf composition error into one line that names the key."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

    cause = error.__cause__ or error
    override = re.search(r"Could not override '([^']+)'", str(error))
    if override and isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        key = override.group(1)
        return (
            f"unknown config key '{key}'; check its spelling against the configs "
            f"(`--cfg job` prints them) or add a new key with +{key}=…"
        )
    if isinstance(error, MissingConfigException) and error.options:
        group, _, choice = (error.missing_cfg_file or "").rpartition("/")
        return (
            f"{group}={choice} is not a config; choose one of {', '.join(error.options)} "
            f"(configs/{group}/)"
        )
    if isinstance(cause, MissingMandatoryValue):
        key = getattr(cause, "full_key", None) or "a required key"
        return f"missing value for '{key}'; pass {key}=…"
    return " ".join(str(error).replace("\n", "; ").split()).replace(";;", ";").strip("; ")


@contextmanager
def composed(
    name: str, overrides: Sequence[str], config_dirs: Sequence[str | Path], with_hydra: bool
) -> Iterator[Any]:
    """The composed (unresolved) config inside Hydra's context; composition errors, and renamed
    keys (:data:`RENAMED_KEYS`), become one :class:`ConfigError` line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    refuse_renamed_overrides(name, overrides)
    extra = [f"file://{Path(folder).expanduser().resolve()}" for folder in config_dirs]
    search = [f"hydra.searchpath=[{','.join(extra)}]"] if extra else []
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(
                name, overrides=[*search, *overrides], return_hydra_config=with_hydra
            )
            refuse_renamed_nodes(name, cfg)
            yield cfg
    except ConfigError:
        raise
    except Exception as error:  # Hydra raises several types; all are configuration mistakes
        raise ConfigError(config_error_message(error)) from None


def compose(
    name: str,
    overrides: Sequence[str] = (),
    config_dirs: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Compose ``<name>.yaml`` of the shipped configs with Hydra overrides, resolved into plain
    dicts and lists — what the commands run with.

    Args:
        name: ``train``, ``eval``, ``predict`` or ``export``.
        overrides: command-line style overrides (``model=fcn``, ``train.max_iters=10``, …).
        config_dirs: folders of the user's own configs, searched before the shipped ones (a
            ``data/mine.yaml`` there is ``data=mine``).

    Raises:
        ConfigError: one line naming the key or group that is wrong (a value that is NaN or
            infinite included, see :func:`refuse_non_finite`).
    """
    from omegaconf import OmegaConf

    with composed(name, overrides, config_dirs, with_hydra=False) as cfg:
        try:
            values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except Exception as error:  # resolution errors: interpolations, missing values
            raise ConfigError(config_error_message(error)) from None
    refuse_non_finite(values)
    return values


def run_folder(
    name: str, overrides: Sequence[str] = (), config_dirs: Sequence[str | Path] = ()
) -> tuple[Path, str]:
    """The run folder a command with these overrides writes into (``hydra.run.dir``, its
    time stamp taken now) and the name of the log Hydra writes there
    (``<hydra.job.name>.log``), the rest of the config checked as :func:`compose` checks it.

    Raises:
        ConfigError: one line naming the key or group that is wrong.
    """
    from omegaconf import OmegaConf

    with composed(name, overrides, config_dirs, with_hydra=True) as cfg:
        try:
            job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
            values = OmegaConf.to_container(job, resolve=True, throw_on_missing=True)
            folder = Path(OmegaConf.select(cfg, "hydra.run.dir", throw_on_missing=True))
            log_name = f"{OmegaConf.select(cfg, 'hydra.job.name', throw_on_missing=True)}.log"
        except Exception as error:  # resolution errors: interpolations, missing values
            raise ConfigError(config_error_message(error)) from None
    refuse_non_finite(values)
    return folder, log_name


def instantiate(node: dict[str, Any], key: str, **kwargs: Any) -> Any:
    """Build the object a config node with ``_target_`` describes (``kwargs`` added to its
    arguments); a wrong target or argument is a :class:`ConfigError` naming ``key``."""
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, **kwargs)
    except Exception as error:  # Hydra wraps import, argument and constructor errors
        cause = error.__cause__ or error
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
        raise ConfigError(f"{key}: cannot build {node.get('_target_')!r}: {message}") from None

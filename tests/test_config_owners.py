"""One name and one owner per setting: the ``inference`` node under one key in every command,
with its choices as files; renamed keys answered with one line naming the new key; and every
default stated once — every config composes and the code accepts it, where code and YAML both
state a default they agree, and no config restates a file it chooses."""

import functools
import importlib
import inspect
import operator
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

import parsenet
from parsenet.config import config_dir, config_names
from parsenet.engine.scoring.inference import InferenceMode
from parsenet.engine.training.optim import parameter_groups
from parsenet.engine.training.settings import TrainSettings
from parsenet.errors import ConfigError
from parsenet.evaluation import evaluate
from parsenet.export import export_checkpoint
from parsenet.loading import load_for_inference
from parsenet.models import FusionHead, SegmentationNet, VGGTrunk
from parsenet.prediction_files import predict_files
from parsenet.quantization import CalibrationSettings

# What each command needs besides its defaults to compose (its ??? keys).
REQUIRED = {
    "train": [],
    "eval": [],
    "predict": ["checkpoint=model.pt", "inputs=photos"],
    "export": ["checkpoint=model.pt"],
}
WITH_INFERENCE = ("train", "eval", "predict")
WITH_CALIBRATION = ("eval", "predict", "export")
COMPOSITIONS = [
    *[(name, []) for name in REQUIRED],
    *[("train", [f"experiment={name}"]) for name in config_names("experiment")],
    *[("train", [f"recipe={name}"]) for name in config_names("recipe")],
    *[
        (name, [f"inference={mode}"])
        for name in WITH_INFERENCE
        for mode in config_names("inference")
    ],
]
# The functions each command calls with its top-level keys (device, batch_size, …).
COMMAND_FUNCTIONS = {
    "train": [],
    "eval": [evaluate, load_for_inference],
    "predict": [predict_files, load_for_inference],
    "export": [export_checkpoint],
}
# parameter_groups' arguments by their lr_mult/ key.
LR_MULT_ARGUMENTS = {"new_layers": "new_layer_mult", "bias": "bias_mult", "scale": "scale_mult"}


def compose(name: str, *overrides: str) -> dict[str, Any]:
    """``parsenet.compose`` with the command's required keys."""
    return parsenet.compose(name, [*REQUIRED[name], *overrides])


@pytest.mark.parametrize("name", WITH_INFERENCE)
def test_inference_is_one_node_whose_choices_are_files(name: str):
    def built(*overrides: str) -> InferenceMode:
        return InferenceMode.from_config(compose(name, *overrides)["inference"])

    assert built() == InferenceMode()
    assert built("inference=slide", "inference.slide.crop=1024") == InferenceMode("slide", 1024)
    assert built("inference.mode=slide") == built("inference=slide") == InferenceMode("slide")
    msflip = built("inference=msflip", "inference.msflip.scales=[0.5,1.0]")
    assert msflip == InferenceMode("msflip", scales=(0.5, 1.0))


@pytest.mark.parametrize(
    ("name", "override", "line"),
    [
        (
            "train",
            "train.eval.mode=slide",
            "train.eval.mode was renamed: use inference=slide (or inference.mode=slide)",
        ),
        (
            "train",
            "+train.eval.slide.crop=256",
            "train.eval.slide.crop was renamed: use inference.slide.crop=256",
        ),
        (
            "eval",
            "mode=msflip",
            "mode was renamed: use inference=msflip (or inference.mode=msflip)",
        ),
        ("eval", "slide.stride=100", "slide.stride was renamed: use inference.slide.stride=100"),
        (
            "predict",
            "msflip.flip=false",
            "msflip.flip was renamed: use inference.msflip.flip=false",
        ),
    ],
)
def test_a_renamed_key_names_the_new_one(name: str, override: str, line: str):
    with pytest.raises(ConfigError) as error:
        compose(name, override)
    assert str(error.value) == line


def test_a_renamed_key_in_a_users_config_file_names_the_new_one(tmp_path: Path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "old.yaml").write_text(
        "# @package _global_\ntrain:\n  eval:\n    mode: slide\n"
    )
    with pytest.raises(ConfigError, match=r"^train\.eval was renamed: use inference$"):
        parsenet.compose("train", ["experiment=old"], config_dirs=[tmp_path])


@pytest.mark.parametrize(
    ("name", "overrides"), [pytest.param(*c, id=" ".join([c[0], *c[1]])) for c in COMPOSITIONS]
)
def test_every_config_composes_and_the_code_takes_it(name: str, overrides: list[str]):
    cfg = compose(name, *overrides)
    if name in WITH_INFERENCE:
        InferenceMode.from_config(cfg["inference"])
    if name == "train":
        TrainSettings.from_config(cfg)


def leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value that is not a mapping."""
    if not isinstance(node, Mapping):
        yield path, node
        return
    for key, value in node.items():
        yield from leaves(value, f"{path}.{key}" if path else str(key))


def plain(value: Any) -> Any:
    """Tuples as lists, so that a YAML list and a code tuple compare."""
    return [plain(item) for item in value] if isinstance(value, (list, tuple)) else value


def code_defaults(target: Callable, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``target``'s stated defaults by config key (``names``: config key → argument); None is
    left out: it means "not set", the code deriving the value."""
    arguments = {argument: key for key, argument in (names or {}).items()}
    return {
        arguments.get(parameter.name, parameter.name): plain(parameter.default)
        for parameter in inspect.signature(target).parameters.values()
        if parameter.default not in (parameter.empty, None)
    }


def targets(cfg: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Callable]]:
    """(node path, callable) of every node built from parsenet's own ``_target_``."""
    target = cfg.get("_target_", "")
    if target.startswith("parsenet."):
        module, _, attribute = target.rpartition(".")
        yield path, getattr(importlib.import_module(module), attribute)
    for key, value in cfg.items():
        if isinstance(value, Mapping):
            yield from targets(value, f"{path}.{key}" if path else key)


def inference_defaults(mode: InferenceMode) -> dict[str, Any]:
    """An :class:`InferenceMode`'s fields laid out as its config node."""
    slide = {"crop": mode.crop, "stride": mode.stride}
    msflip = {"scales": plain(mode.scales), "flip": mode.flip}
    return {"mode": mode.mode, "slide": slide, "msflip": msflip}


def default_owners(name: str, cfg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(node path, the code's defaults for its keys) of every node of ``cfg`` that code with
    defaults of its own builds."""
    owners = [(path, code_defaults(target)) for path, target in targets(cfg)]
    owners += [("", code_defaults(function)) for function in COMMAND_FUNCTIONS[name]]
    if name in WITH_INFERENCE:
        owners.append(("inference", inference_defaults(InferenceMode())))
    if name in WITH_CALIBRATION:
        owners.append(("calibration", code_defaults(CalibrationSettings)))
    if name == "train":
        owners += [
            ("lr_mult", code_defaults(parameter_groups, LR_MULT_ARGUMENTS)),
            ("model", code_defaults(SegmentationNet)),
            ("model.backbone", code_defaults(VGGTrunk)),
            ("model.head", code_defaults(FusionHead)),
        ]
    return owners


@pytest.mark.parametrize("name", REQUIRED)
def test_where_code_and_yaml_both_state_a_default_they_agree(name: str):
    """The command as users get it with no choices made: every value it takes from a group's
    default file that the code building it also defaults."""
    cfg = compose(name)
    disagreements = {}
    for path, defaults in default_owners(name, cfg):
        node = functools.reduce(operator.getitem, path.split("."), cfg) if path else cfg
        stated = dict(leaves(node))
        for key, value in leaves(defaults):
            if key in stated and plain(stated[key]) != value:
                disagreements[f"{path}.{key}".lstrip(".")] = (stated[key], value)
    assert disagreements == {}, "YAML value, code default"


def is_global(path: Path) -> bool:
    """Whether a config file is ``# @package _global_`` (its keys are top-level)."""
    return path.read_text().startswith("# @package _global_")


def own_keys(path: Path) -> dict[str, Any]:
    """A config file's keys, its defaults list left out."""
    keys = OmegaConf.to_container(OmegaConf.load(path))
    keys.pop("defaults", None)
    return keys


def starts_from(path: Path) -> list[tuple[Path, str]]:
    """The files a config file's defaults list starts from, each with the node it fills,
    relative to the file's own (``override /optim: sgd`` → optim/sgd.yaml at ``optim``;
    ``- whole`` in inference/slide.yaml → inference/whole.yaml at the file's own node)."""
    entries = OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])
    files = []
    for entry in entries:
        if isinstance(entry, str):
            if entry != "_self_":
                files.append((path.parent / f"{entry}.yaml", ""))
            continue
        ((key, option),) = entry.items()
        group = key.removeprefix("override").strip()
        if group.startswith("/"):
            file = config_dir() / group.lstrip("/") / f"{option}.yaml"
            files.append((file, "" if is_global(file) else group.lstrip("/").replace("/", ".")))
        else:
            files.append((path.parent / group / f"{option}.yaml", group.replace("/", ".")))
    return files


def given(path: Path) -> dict[str, Any]:
    """What a config file gives at its own node: the files it starts from, then its own keys."""
    merged = OmegaConf.create()
    for file, node in starts_from(path):
        values = given(file)
        for key in reversed(node.split(".") if node else []):
            values = {key: values}
        merged = OmegaConf.merge(merged, values)
    return OmegaConf.to_container(OmegaConf.merge(merged, own_keys(path)))


# Not checked: experiments are table rows, each stating the columns its table varies (taps,
# normalisation) also where the model file it starts from has the same value; ablation/ holds
# the tables themselves (scripts/ablate.py), not configs.
NOT_CHECKED = ("experiment", "ablation")
STARTING_FROM_ANOTHER = sorted(
    path.relative_to(config_dir())
    for path in config_dir().glob("*/**/*.yaml")
    if path.relative_to(config_dir()).parts[0] not in NOT_CHECKED and starts_from(path)
)


@pytest.mark.parametrize("relative", STARTING_FROM_ANOTHER, ids=str)
def test_no_config_restates_a_file_it_starts_from(relative: Path):
    """A config that starts from another file (``override /optim: sgd``, ``- whole``) states
    only what it changes: none of its values equals the one that file gives."""
    path = config_dir() / relative
    own = dict(leaves(own_keys(path)))
    restated = {}
    for file, node in starts_from(path):
        inherited = {f"{node}.{key}" if node else key: v for key, v in leaves(given(file))}
        restated |= {key: value for key, value in own.items() if inherited.get(key, ...) == value}
    assert restated == {}, f"{relative} restates values of the files it starts from"

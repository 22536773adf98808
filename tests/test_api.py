"""The public Python API (``parsenet.train``, ``evaluate``, ``load_for_inference``, ``predict``),
the user's own config folders, and the package layout the wheel is built from."""

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_MODEL, TINY_SYNTHETIC, assert_one_line_error, run_cli

import parsenet
from parsenet.errors import ConfigError, DataError

USER_DATA = """\
defaults:
  - synthetic
  - _self_
name: synthetic
num_train: 12
num_val: 4
"""
USER_EXPERIMENT = """\
# @package _global_
defaults:
  - override /data: mine
  - override /optim: adamw
train:
  max_iters: 2
  batch_size: 2
  num_overlays: 0
"""


@pytest.fixture(scope="module")
def user_configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config folder of a user's own, outside the repository: a data config and an
    experiment."""
    folder = tmp_path_factory.mktemp("my_configs")
    (folder / "data").mkdir()
    (folder / "experiment").mkdir()
    (folder / "data" / "mine.yaml").write_text(USER_DATA)
    (folder / "experiment" / "mine_parsenet.yaml").write_text(USER_EXPERIMENT)
    return folder


@pytest.fixture(scope="module")
def trained(user_configs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained by the real command from another directory, with the user's configs."""
    work = tmp_path_factory.mktemp("api_run")
    run_cli(
        "train",
        "--config-dir",
        str(user_configs),
        "experiment=mine_parsenet",
        *TINY_MODEL,
        "data.height=24",
        "data.width=64",
        "data.num_workers=0",
        f"paths.data_root={work / 'data'}",
        f"hydra.run.dir={work / 'run'}",
        cwd=work,
        check=True,
    )
    return work / "run"


def test_compose_reads_a_users_config_folder(user_configs: Path):
    cfg = parsenet.compose("train", ["experiment=mine_parsenet"], config_dirs=[user_configs])
    assert cfg["data"]["num_train"] == 12 and cfg["optim"]["_target_"] == "torch.optim.AdamW"
    assert cfg["train"]["max_iters"] == 2
    with pytest.raises(ConfigError, match="experiment=mine_parsenet is not a config"):
        parsenet.compose("train", ["experiment=mine_parsenet"])


def test_cli_run_with_user_configs_from_another_directory(trained: Path):
    record = json.loads((trained / "metrics.json").read_text())
    assert record["num_images"] == 4 and record["dataset"] == "synthetic"


def test_evaluate_from_python_matches_the_command(trained: Path, tmp_path: Path):
    checkpoint = trained / "checkpoints" / "last.pt"
    result = parsenet.evaluate(checkpoint, data={"num_workers": 0}, device="cpu")
    assert isinstance(result, parsenet.EvaluationResult)
    assert result.num_images == 4 and result.split == "val" and result.model == "parsenet"
    assert result.confusion.shape == (5, 5) and result.confusion.sum() == 4 * 24 * 64
    run_cli("eval", f"checkpoint={checkpoint}", f"hydra.run.dir={tmp_path}", check=True)
    command = json.loads((tmp_path / "metrics.json").read_text())
    assert command["mIoU"] == pytest.approx(result.miou)
    np.testing.assert_array_equal(np.load(tmp_path / "confusion.npy"), result.confusion)
    written = result.write(tmp_path / "again")
    assert json.loads(written["metrics"].read_text()) == json.loads(json.dumps(result.record()))


def test_load_for_inference_and_predict_any_size(trained: Path):
    loaded = parsenet.load_for_inference(trained / "checkpoints" / "last.pt", device="cpu")
    assert loaded.class_names[0] == "background" and len(loaded.palette) >= loaded.num_classes
    assert loaded.data_config["name"] == "synthetic" and loaded.normalization.name == "torchvision"
    assert not loaded.model.training
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    label = parsenet.predict(loaded, image)
    assert label.shape == (37, 53) and label.dtype == np.uint8
    assert label.max() < loaded.num_classes
    slide = parsenet.predict(loaded, image, parsenet.InferenceMode("slide", crop=64, stride=64))
    np.testing.assert_array_equal(slide, label)  # one window over the whole image
    with pytest.raises(DataError, match="H×W×3"):
        parsenet.predict(loaded, image[..., 0])


def test_a_data_key_the_checkpoint_lacks_is_one_line(trained: Path, tmp_path: Path):
    checkpoint = trained / "checkpoints" / "last.pt"
    with pytest.raises(ConfigError, match="data.rooot is not a key"):
        parsenet.evaluate(checkpoint, data={"rooot": "/x"}, device="cpu")
    result = run_cli(
        "eval", f"checkpoint={checkpoint}", "data.rooot=/x", f"hydra.run.dir={tmp_path / 'e'}"
    )
    assert_one_line_error(result, "data.rooot is not a key of the checkpoint's config")
    assert not (tmp_path / "e").exists()


def test_train_from_python(tmp_path: Path):
    cfg = parsenet.compose(
        "train",
        [
            *TINY_MODEL,
            *TINY_SYNTHETIC,
            "optim=adamw",
            f"paths.data_root={tmp_path / 'data'}",
            "train.max_iters=2",
            "train.batch_size=2",
            "train.num_overlays=0",
        ],
    )
    before = json.dumps(cfg, sort_keys=True)
    record = parsenet.train(cfg, tmp_path / "run")
    assert record["num_images"] == 6 and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert json.dumps(cfg, sort_keys=True) == before  # the caller's config is left as it was


def test_every_package_is_listed_for_the_wheel():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    listed = set(setup["options"]["packages"].split())
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "parsenet").rglob("__init__.py")
    }
    assert listed == on_disk | {"parsenet.configs"}
    assert setup["options"]["package_dir"].split() == ["parsenet.configs", "=", "configs"]
    assert (REPO / "configs" / "__init__.py").is_file()
    assert parsenet.compose("eval", ["checkpoint=x.pt"])["inference"]["mode"] == "whole"


def test_a_checkout_that_is_only_on_sys_path_finds_its_configs(tmp_path: Path):
    """Without any install (no site-packages, as on a machine that only has the checkout on
    PYTHONPATH), ``config_dir`` falls back to ``configs/`` beside the package."""
    found = subprocess.run(
        [sys.executable, "-S", "-c", "from parsenet.config import config_dir; print(config_dir())"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == REPO / "configs"

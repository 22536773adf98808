"""The memory layout (``channels_last=auto|true|false``): chosen by a probe or the cache,
logged, honoured by training, evaluation and prediction, recorded in train_log.jsonl and
metrics.json; and the ONNX Runtime backend of prediction."""

from __future__ import annotations

import json
import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_train, run_cli
from PIL import Image

import parsenet
from parsenet.data import dataset_info
from parsenet.engine.runtime import memory_format
from parsenet.engine.runtime.checkpoint import save_checkpoint
from parsenet.engine.runtime.memory_format import (
    LayoutChoice,
    choose_memory_format,
    measure_layouts,
)
from parsenet.engine.training.settings import TrainSettings
from parsenet.engine.training.trainer import Trainer
from parsenet.errors import ConfigError
from parsenet.models import build_model
from parsenet.models.pretrained import choose_input_norm

TINY = {"backbone": {"width_mult": 0.0625}}
CPU = torch.device("cpu")


class FakeProbe:
    """Stands in for the timed passes: NHWC takes ``channels_last_s`` seconds, NCHW one."""

    def __init__(self, channels_last_s: float) -> None:
        self.channels_last_s = channels_last_s
        self.calls: list[tuple] = []

    def __call__(self, model, device, shape, training, amp) -> dict[str, list[float]]:
        self.calls.append((tuple(shape), training, amp))
        return {"contiguous": [1.0] * 3, "channels_last": [self.channels_last_s] * 3}


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty cache folder and no verdicts of earlier tests."""
    monkeypatch.setenv("PARSENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(memory_format, "DECIDED", {})
    return tmp_path / "cache" / "memory_format.json"


def fake_probe(monkeypatch: pytest.MonkeyPatch, channels_last_s: float) -> FakeProbe:
    probe = FakeProbe(channels_last_s)
    monkeypatch.setattr(memory_format, "measure_layouts", probe)
    return probe


def tiny_model() -> torch.nn.Module:
    return build_model(TINY, 5)


@pytest.mark.parametrize("value", ["auto", True, False])
def test_settings_take_auto_true_and_false(tmp_path: Path, value):
    cfg = compose_train(tmp_path, f"train.channels_last={str(value).lower()}")
    assert TrainSettings.from_config(cfg).channels_last == value


def test_a_bad_setting_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="train.channels_last='maybe' must be auto, true or"):
        TrainSettings.from_config(compose_train(tmp_path, "train.channels_last=maybe"))
    with pytest.raises(ConfigError, match="channels_last=1 must be auto, true or false"):
        choose_memory_format(tiny_model(), CPU, (1, 3, 32, 32), 1)


@pytest.mark.parametrize("setting", [True, False])
def test_true_and_false_force_the_layout_without_a_probe(monkeypatch, own_cache, setting):
    probe = fake_probe(monkeypatch, 0.5)
    choice = choose_memory_format(tiny_model(), CPU, (1, 3, 32, 32), setting)
    assert choice.channels_last is setting and choice.decided_by == "setting"
    assert choice.memory_format == (torch.channels_last if setting else torch.contiguous_format)
    assert not probe.calls and not own_cache.exists()
    assert choice.record() == {
        "memory_format": "channels_last" if setting else "contiguous",
        "setting": setting,
        "decided_by": "setting",
    }


@pytest.mark.parametrize(
    ("channels_last_s", "expected"),
    [(0.5, "channels_last"), (0.99, "contiguous"), (2.0, "contiguous")],  # 0.99: within 2 %
)
def test_auto_takes_the_faster_layout_once_and_caches_it(
    monkeypatch, own_cache, caplog, channels_last_s, expected
):
    probe = fake_probe(monkeypatch, channels_last_s)
    model = tiny_model()
    with caplog.at_level(logging.INFO, logger="parsenet.engine.runtime.memory_format"):
        first = choose_memory_format(model, CPU, (2, 3, 32, 32), "auto", training=True)
    assert (first.name, first.decided_by) == (expected, "probe")
    assert first.probe["channels_last_speedup"] == pytest.approx(1 / channels_last_s)
    assert first.probe["shape"] == [2, 3, 32, 32] and first.probe["mode"] == "training"
    assert probe.calls == [((2, 3, 32, 32), True, "off")]
    assert f"memory layout {expected} (channels_last=auto: measured now" in caplog.text

    entries = json.loads(own_cache.read_text())
    (key,) = entries
    assert entries[key]["memory_format"] == expected
    assert "training 2×3×32×32" in key and f"{torch.get_num_threads()} threads" in key

    monkeypatch.setattr(memory_format, "DECIDED", {})  # a new process: only the file remains
    again = choose_memory_format(model, CPU, (2, 3, 32, 32), "auto", training=True)
    assert (again.name, again.decided_by) == (expected, "cache") and len(probe.calls) == 1
    choose_memory_format(model, CPU, (2, 3, 48, 48), "auto", training=True)  # another shape
    choose_memory_format(model, CPU, (2, 3, 32, 32), "auto", training=False)  # inference
    assert len(probe.calls) == 3 and len(json.loads(own_cache.read_text())) == 3


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path: Path):
    assert memory_format.cache_path() == tmp_path / "cache" / "memory_format.json"
    monkeypatch.delenv("PARSENET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert memory_format.cache_path() == tmp_path / "xdg" / "parsenet" / "memory_format.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert (
        memory_format.cache_path()
        == tmp_path / "home" / ".cache" / "parsenet" / "memory_format.json"
    )


def test_an_unwritable_cache_still_decides_once(monkeypatch, tmp_path: Path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("PARSENET_CACHE", str(tmp_path / "file" / "below"))
    probe = fake_probe(monkeypatch, 0.5)
    for _ in range(2):
        assert choose_memory_format(tiny_model(), CPU, (1, 3, 32, 32)).channels_last
    assert len(probe.calls) == 1


def test_the_cache_keeps_other_entries_and_replaces_a_corrupt_file(own_cache):
    own_cache.parent.mkdir()
    own_cache.write_text('{"cut short": ')
    assert memory_format.read_cache(own_cache) == {}
    memory_format.write_cache(own_cache, "a", {"memory_format": "contiguous"})
    memory_format.write_cache(own_cache, "b", {"memory_format": "channels_last"})
    assert json.loads(own_cache.read_text()) == {
        "a": {"memory_format": "contiguous"},
        "b": {"memory_format": "channels_last"},
    }
    assert [path.name for path in own_cache.parent.iterdir()] == ["memory_format.json"]


def test_a_cache_write_that_fails_leaves_the_old_file_whole_and_no_temporary(
    monkeypatch, own_cache
):
    memory_format.write_cache(own_cache, "a", {"memory_format": "contiguous"})
    written = own_cache.read_text()

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", full_disk)
    memory_format.write_cache(own_cache, "b", {"memory_format": "channels_last"})  # only logged
    assert own_cache.read_text() == written
    assert [path.name for path in own_cache.parent.iterdir()] == ["memory_format.json"]


def write_entries(path: Path, writer: int) -> None:
    """One of the concurrent writers: 20 entries of its own, one write each."""
    for entry in range(20):
        memory_format.write_cache(path, f"{writer}/{entry}", {"memory_format": "contiguous"})


def test_concurrent_writers_never_show_a_reader_half_a_file(own_cache):
    memory_format.write_cache(own_cache, "first", {"memory_format": "contiguous"})
    writers = [
        multiprocessing.get_context("fork").Process(target=write_entries, args=(own_cache, n))
        for n in range(3)
    ]
    for writer in writers:
        writer.start()
    while any(writer.is_alive() for writer in writers):
        assert isinstance(json.loads(own_cache.read_text()), dict)
    assert [writer.exitcode for writer in writers] == [0, 0, 0]
    assert [path.name for path in own_cache.parent.iterdir()] == ["memory_format.json"]


@pytest.mark.parametrize("training", [True, False])
def test_the_real_probe_leaves_model_and_random_state_alone(training: bool):
    model = tiny_model().train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    seconds = measure_layouts(model, CPU, (2, 3, 40, 48), training, "off", repetitions=2)
    assert torch.equal(torch.rand(4), expected)  # the global generator did not move
    assert set(seconds) == {"contiguous", "channels_last"}
    assert all(len(times) == 2 and min(times) > 0 for times in seconds.values())
    assert model.training and all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(after[name], value) for name, value in before.items())
    assert all(p.is_contiguous() for p in model.parameters())


def layout_of(tmp_path: Path, run: str) -> tuple[dict, dict]:
    """The layout in a run's train_log.jsonl config line and in its metrics.json."""
    first = json.loads((tmp_path / run / "train_log.jsonl").read_text().splitlines()[0])
    return first["config"]["layout"], json.loads((tmp_path / run / "metrics.json").read_text())[
        "layout"
    ]


def test_training_takes_honours_logs_and_records_the_choice(monkeypatch, tmp_path: Path):
    probe = fake_probe(monkeypatch, 0.5)  # NHWC twice as fast
    cfg = compose_train(tmp_path)  # channels_last: auto, the default
    assert cfg["train"]["channels_last"] == "auto"
    trainer = Trainer(cfg, tmp_path / "run")
    assert probe.calls == [((2, 3, 24, 64), True, "off")]  # whole 24×64 strips, batch 2
    assert trainer.memory_format == torch.channels_last
    kernels = [p for p in trainer.model.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    seen = []
    trainer.model.register_forward_pre_hook(
        lambda module, args: (
            seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
            if module.training
            else None
        )
    )
    trainer.run()
    assert seen == [True] * 3  # every training batch in NHWC
    logged, recorded = layout_of(tmp_path, "run")
    assert logged == recorded
    assert logged["memory_format"] == "channels_last" and logged["setting"] == "auto"
    assert logged["decided_by"] == "probe" and logged["probe"]["channels_last_speedup"] == 2.0

    forced = Trainer(compose_train(tmp_path, "train.channels_last=false"), tmp_path / "forced")
    assert forced.memory_format == torch.contiguous_format and len(probe.calls) == 1
    forced.run()
    logged, recorded = layout_of(tmp_path, "forced")
    assert (
        logged
        == recorded
        == {
            "memory_format": "contiguous",
            "setting": False,
            "decided_by": "setting",
        }
    )
    again = Trainer(cfg, tmp_path / "again")  # same machine, model and shape: the cache
    assert again.memory_format == torch.channels_last and len(probe.calls) == 1
    assert again.cfg["layout"]["decided_by"] == "cache"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A checkpoint of a tiny random model on the synthetic data (no training needed)."""
    cfg = compose_train(tmp_path)
    cfg["model"]["input_norm"] = choose_input_norm(cfg["model"]["input_norm"], None)
    info = dataset_info(cfg["data"])
    model = build_model(cfg["model"], info.num_classes)
    state = {"model": model.state_dict(), "config": cfg, "dataset": info.to_dict()}
    return save_checkpoint(tmp_path / "model.pt", {**state, "iteration": 0})


def test_inference_takes_the_choice_and_predicts_the_same_labels(monkeypatch, checkpoint: Path):
    probe = fake_probe(monkeypatch, 0.5)
    auto = parsenet.load_for_inference(checkpoint, "cpu")
    assert probe.calls == [((1, 3, 375, 500), False, "off")]  # a VOC-sized image
    assert auto.layout.channels_last and auto.layout.decided_by == "probe"
    assert auto.model.backbone.layers.conv1_1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    plain = parsenet.load_for_inference(checkpoint, "cpu", channels_last=False)
    assert plain.layout == LayoutChoice("contiguous", False, "setting")
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.testing.assert_array_equal(parsenet.predict(auto, image), parsenet.predict(plain, image))
    with pytest.raises(ConfigError, match="channels_last='fast' must be auto, true or false"):
        parsenet.load_for_inference(checkpoint, "cpu", channels_last="fast")


def test_evaluation_records_the_layout(monkeypatch, checkpoint: Path, tmp_path: Path):
    fake_probe(monkeypatch, 0.5)
    result = parsenet.evaluate(checkpoint, device="cpu")
    assert result.record()["layout"]["memory_format"] == "channels_last"
    run_cli(
        "eval",
        f"checkpoint={checkpoint}",
        "channels_last=false",
        f"hydra.run.dir={tmp_path / 'e'}",
        check=True,
    )
    record = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert record["layout"] == {
        "memory_format": "contiguous",
        "setting": False,
        "decided_by": "setting",
    }
    assert record["mIoU"] == pytest.approx(result.miou)


def test_the_onnxruntime_backend_predicts_the_same_labels(checkpoint: Path, tmp_path, own_cache):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    eager = parsenet.load_for_inference(checkpoint, "cpu", channels_last=False)
    runtime = parsenet.load_for_inference(checkpoint, backend="onnxruntime")  # device auto: CPU
    assert runtime.device == CPU and runtime.layout.decided_by == "onnxruntime"
    (exported,) = (own_cache.parent / "onnx").glob("*.onnx")
    images = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        difference = (runtime.model(images) - eager.model(images)).abs().max()
    assert difference < 1e-4
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    labels = parsenet.predict(eager, image)
    np.testing.assert_array_equal(parsenet.predict(runtime, image), labels)

    Image.fromarray(image).save(tmp_path / "photo.png")
    written = exported.stat().st_mtime_ns
    run_cli(
        "predict",
        f"checkpoint={checkpoint}",
        f"inputs={tmp_path / 'photo.png'}",
        "backend=onnxruntime",
        f"hydra.run.dir={tmp_path / 'p'}",
        check=True,
    )
    assert exported.stat().st_mtime_ns == written  # the cached export, not a new one
    np.testing.assert_array_equal(
        np.array(Image.open(tmp_path / "p" / "labels" / "photo.png")), labels
    )
    with pytest.raises(ConfigError, match="backend='tensorrt' is not one of torch, onnxruntime"):
        parsenet.load_for_inference(checkpoint, backend="tensorrt")

"""int8 (ONNX Runtime, static, calibrated) and bf16 (torch autocast) inference: the labels they
give on real CamVid images against float32, deterministic calibration, the cache rebuilt for a
changed checkpoint, and every refusal in one line."""

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, assert_one_line_error, run_cli, write_voc_tree

import parsenet
from parsenet.data import dataset_info
from parsenet.data.normalization import get_normalization
from parsenet.engine.runtime import cpu_features
from parsenet.engine.runtime.checkpoint import save_checkpoint
from parsenet.engine.runtime.precision import AutocastModel
from parsenet.errors import ConfigError, DataError
from parsenet.models import build_model
from parsenet.models.pretrained import choose_input_norm
from parsenet.quantization import CalibrationSettings, calibration_set, float_nodes

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CALIBRATION = {"images": 3}
VAL_IMAGES = 3  # real CamVid images the labels are compared on


def camvid_root() -> Path:
    value = os.environ.get("PARSENET_CAMVID")
    if not value:
        pytest.skip("PARSENET_CAMVID is not set (.ci/run sets it to ../shared/datasets/camvid)")
    return Path(value)


def write_checkpoint(path: Path, seed: int = 0, *overrides: str) -> Path:
    """A tiny random model (seeded) on CamVid's classes, saved as a training checkpoint."""
    cfg = parsenet.compose(
        "train", [*TINY_MODEL, "data=camvid", f"data.root={camvid_root()}", *overrides]
    )
    cfg["model"]["input_norm"] = choose_input_norm(cfg["model"]["input_norm"], None)
    info = dataset_info(cfg["data"])
    torch.manual_seed(seed)
    model = build_model(cfg["model"], info.num_classes)
    state = {"model": model.state_dict(), "config": cfg, "dataset": info.to_dict()}
    return save_checkpoint(path, {**state, "iteration": 0})


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder of this test's own: its exports are the test's."""
    monkeypatch.setenv("PARSENET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("int8") / "model.pt")


def val_images(loaded: parsenet.InferenceModel) -> list[np.ndarray]:
    """The first :data:`VAL_IMAGES` CamVid val images, as RGB arrays."""
    from parsenet.data import build_dataset

    dataset = build_dataset(loaded.data_config, "val")
    return [dataset.load_pair(index)[0] for index in range(VAL_IMAGES)]


def test_int8_labels_equal_float32_on_most_pixels_of_real_images(checkpoint, own_cache, caplog):
    cpu_features.warn_int8_without_vnni.cache_clear()
    with caplog.at_level(logging.WARNING):
        fp32 = parsenet.load_for_inference(checkpoint, backend="onnxruntime")
        int8 = parsenet.load_for_inference(
            checkpoint, backend="onnxruntime", precision="int8", calibration=CALIBRATION
        )
        parsenet.load_for_inference(
            checkpoint, backend="onnxruntime", precision="int8", calibration=CALIBRATION
        )
    said = [record for record in caplog.records if "int8 on a CPU without" in record.message]
    assert len(said) == (0 if cpu_features.has_vnni() else 1)  # once per process
    assert int8.model.path.name.endswith(".int8.onnx") and int8.model.path.parent == own_cache
    pairs = [
        (parsenet.predict(int8, image), parsenet.predict(fp32, image)) for image in val_images(fp32)
    ]
    agreement = [np.mean(ours == theirs) for ours, theirs in pairs]
    assert min(agreement) > 0.9, agreement
    assert max(agreement) < 1  # the quantised model is not the float one
    # A random model gives most pixels one class, which any int8 model keeps; the pixels float32
    # gives another class tell a calibrated model (about 0.88 of them kept) from one calibrated
    # on the wrong ranges (0.4 or less, measured with the calibration images scaled by 0.02 or 5).
    ours = np.concatenate([labels.ravel() for labels, _ in pairs])
    theirs = np.concatenate([labels.ravel() for _, labels in pairs])
    other_class = theirs != np.bincount(theirs).argmax()
    assert np.mean(ours[other_class] == theirs[other_class]) > 0.75


def test_eval_scores_int8_with_the_same_scorer(checkpoint, own_cache, tmp_path):
    run_cli(
        "parsenet-eval",
        f"checkpoint={checkpoint}",
        "backend=onnxruntime",
        "precision=int8",
        "calibration.images=2",
        f"hydra.run.dir={tmp_path / 'eval'}",
        check=True,
    )
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert record["precision"] == {"backend": "onnxruntime", "precision": "int8"}
    assert record["num_images"] == 101  # CamVid val, scored as float32 is
    fp32 = parsenet.evaluate(checkpoint, device="cpu", channels_last=False)
    assert fp32.record()["precision"] == {"backend": "torch", "precision": "fp32"}
    assert abs(record["mIoU"] - fp32.miou) < 0.05


def test_calibration_is_deterministic(checkpoint, tmp_path, monkeypatch):
    def exported(cache: str, calibration: dict) -> bytes:
        monkeypatch.setenv("PARSENET_CACHE", str(tmp_path / cache))
        loaded = parsenet.load_for_inference(
            checkpoint, backend="onnxruntime", precision="int8", calibration=calibration
        )
        return loaded.model.path.read_bytes()

    first = exported("a", CALIBRATION)
    assert exported("b", CALIBRATION) == first  # built again from nothing: the same bytes
    assert exported("c", {"images": 2}) != first  # other images: other ranges


def test_a_changed_checkpoint_is_quantised_again(tmp_path, own_cache):
    path = write_checkpoint(tmp_path / "model.pt", seed=0)
    first = parsenet.load_for_inference(
        path, backend="onnxruntime", precision="int8", calibration=CALIBRATION
    )
    made = first.model.path.stat().st_mtime_ns
    again = parsenet.load_for_inference(
        path, backend="onnxruntime", precision="int8", calibration=CALIBRATION
    )
    assert again.model.path == first.model.path and again.model.path.stat().st_mtime_ns == made
    write_checkpoint(path, seed=1)  # retrained in place
    changed = parsenet.load_for_inference(
        path, backend="onnxruntime", precision="int8", calibration=CALIBRATION
    )
    assert changed.model.path != first.model.path
    assert changed.model.path.read_bytes() != first.model.path.read_bytes()
    image = val_images(first)[0]
    eager = parsenet.load_for_inference(path, "cpu", channels_last=False)
    assert np.mean(parsenet.predict(changed, image) == parsenet.predict(eager, image)) > 0.9


def test_float_nodes_are_the_norms_the_context_and_the_upsampling(checkpoint, own_cache):
    import onnx

    loaded = parsenet.load_for_inference(checkpoint, backend="onnxruntime")
    reasons = float_nodes(onnx.load(str(loaded.model.path)))
    kinds = set(reasons.values())
    assert kinds == {
        "L2Norm (norm and scale)",
        "global pooling",
        "on the pooled vector",
        "final upsampling",
    }
    graph = onnx.load(str(loaded.model.path)).graph
    ops = {node.name: node.op_type for node in graph.node}
    assert {ops[name] for name, why in reasons.items() if why == "global pooling"} == {"ReduceMean"}
    on_pooled = [ops[name] for name, why in reasons.items() if why == "on the pooled vector"]
    assert "Conv" in on_pooled  # the context's classifier
    quantised = [ops[name] for name in ops if name not in reasons]
    assert quantised.count("Conv") >= 15  # the trunk's 15 convolutions and the local classifier


def test_bf16_is_refused_without_bf16_instructions(checkpoint, monkeypatch):
    monkeypatch.setattr(cpu_features, "has_bf16", lambda: False)
    monkeypatch.delenv(cpu_features.EMULATE_BF16_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"^precision=bf16 needs a CPU with bf16 instructions"):
        parsenet.load_for_inference(checkpoint, "cpu", precision="bf16")


def test_bf16_runs_under_autocast_where_the_cpu_has_it(checkpoint, monkeypatch):
    monkeypatch.setattr(cpu_features, "has_bf16", lambda: True)
    bf16 = parsenet.load_for_inference(checkpoint, "cpu", channels_last=False, precision="bf16")
    fp32 = parsenet.load_for_inference(checkpoint, "cpu", channels_last=False)
    assert isinstance(bf16.model, AutocastModel) and bf16.model.dtype == torch.bfloat16
    seen = []
    conv = bf16.model.model.backbone.layers.conv1_1
    handle = conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    labels = [
        (parsenet.predict(bf16, image), parsenet.predict(fp32, image)) for image in val_images(fp32)
    ]
    handle.remove()
    assert set(seen) == {torch.bfloat16}
    assert min(np.mean(ours == theirs) for ours, theirs in labels) > 0.9


def test_emulated_bf16_says_so(checkpoint, monkeypatch, caplog):
    monkeypatch.setattr(cpu_features, "has_bf16", lambda: False)
    monkeypatch.setenv(cpu_features.EMULATE_BF16_ENV, "1")
    with caplog.at_level(logging.WARNING):
        loaded = parsenet.load_for_inference(checkpoint, "cpu", precision="bf16")
    assert isinstance(loaded.model, AutocastModel)
    assert any("bf16 emulated" in record.message for record in caplog.records)


@pytest.mark.parametrize(
    ("backend", "precision", "line"),
    [
        ("torch", "int8", "backend=torch does not run precision='int8'"),
        ("onnxruntime", "bf16", "backend=onnxruntime does not run precision='bf16'"),
        ("torch", "fp16", "backend=torch does not run precision='fp16'"),
        ("tensorrt", "fp32", "backend='tensorrt' is not one of torch, onnxruntime"),
    ],
)
def test_unknown_pairs_are_one_line(checkpoint, backend, precision, line):
    with pytest.raises(ConfigError, match=f"^{line}"):
        parsenet.load_for_inference(checkpoint, backend=backend, precision=precision)


@pytest.mark.parametrize(
    ("node", "line"),
    [
        ({"images": 0}, "calibration.images=0 must be a whole number ≥ 1"),
        ({"images": 2.5}, "calibration.images=2.5 must be a whole number ≥ 1"),
        ({"imgs": 4}, "calibration.imgs is not a calibration key (images, split)"),
    ],
)
def test_bad_calibration_settings_are_one_line(node, line):
    with pytest.raises(ConfigError, match=f"^{re.escape(line)}"):
        CalibrationSettings.from_config(node)


def test_calibration_data_of_another_class_count_is_one_line(tmp_path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2})
    data = parsenet.compose("train", ["data=voc", f"data.root={root}"])["data"]
    with pytest.raises(ConfigError, match="^calibration data voc has 21 classes but the check"):
        calibration_set(data, get_normalization("torchvision"), CalibrationSettings(), 11)


def test_an_empty_calibration_split_is_one_line(tmp_path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "empty": 0})
    data = parsenet.compose("train", ["data=voc", f"data.root={root}"])["data"]
    settings = CalibrationSettings(4, "empty")
    with pytest.raises(DataError, match=r"empty\.txt lists no images$"):
        calibration_set(data, get_normalization("torchvision"), settings, 21)


def test_the_commands_refuse_in_one_line(checkpoint, tmp_path):
    export = run_cli(
        "parsenet-export",
        f"checkpoint={checkpoint}",
        "format=onnx",
        "quantize=int8",
        "calibration.images=0",
        f"hydra.run.dir={tmp_path / 'x'}",
    )
    assert_one_line_error(export, "calibration.images=0 must be a whole number ≥ 1")
    torchscript = run_cli(
        "parsenet-export", f"checkpoint={checkpoint}", "quantize=int8", f"hydra.run.dir={tmp_path}"
    )
    assert_one_line_error(torchscript, "quantize=int8 needs format=onnx")
    predict = run_cli(
        "parsenet-predict",
        f"checkpoint={checkpoint}",
        f"inputs={tmp_path}",
        "precision=int8",
        f"hydra.run.dir={tmp_path / 'p'}",
    )
    assert_one_line_error(predict, "backend=torch does not run precision='int8'")
    other_classes = run_cli(
        "parsenet-eval",
        f"checkpoint={checkpoint}",
        "backend=onnxruntime",
        "precision=int8",
        "data=voc",
        f"data.root={write_voc_tree(tmp_path / 'voc', {'train': 2, 'val': 1})}",
        f"hydra.run.dir={tmp_path / 'e'}",
    )
    assert_one_line_error(other_classes, "predicts 11 classes (camvid) but the chosen data has 21")
    if not cpu_features.has_bf16():
        bf16 = run_cli(
            "parsenet-predict",
            f"checkpoint={checkpoint}",
            f"inputs={tmp_path}",
            "precision=bf16",
            "device=cpu",
            f"hydra.run.dir={tmp_path / 'b'}",
        )
        assert_one_line_error(bf16, "precision=bf16 needs a CPU with bf16 instructions")


def test_export_int8_is_checked_on_validation_images(checkpoint, own_cache, tmp_path):
    out = tmp_path / "model.int8.onnx"
    about = run_cli(
        "parsenet-export",
        f"checkpoint={checkpoint}",
        "format=onnx",
        "quantize=int8",
        "calibration.images=3",
        f"out={out}",
        f"hydra.run.dir={tmp_path / 'x'}",
        check=True,
    )
    assert "(onnx int8)" in about.stdout
    record = json.loads((tmp_path / "x" / "export.json").read_text())
    assert record["quantize"]["calibration"] == {"images": 3, "split": None}
    assert len(record["parity"]) == 4 and record["parity"][0]["size"] == [360, 480]
    assert min(result["argmax_agreement"] for result in record["parity"]) > 0.9
    cached = parsenet.load_for_inference(
        checkpoint, backend="onnxruntime", precision="int8", calibration={"images": 3}
    )
    assert out.read_bytes() == cached.model.path.read_bytes()  # the cached model, copied


# slow: two tiny models through three precisions on 2 CamVid images, int8 calibrated on 2
@pytest.mark.slow
def test_the_precision_table_script(checkpoint, own_cache, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "precision_table", Path(__file__).resolve().parents[1] / "scripts" / "precision_table.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(cpu_features, "has_bf16", lambda: True)
    out = tmp_path / "table"
    arguments = [str(checkpoint), "--out", str(out), "--limit", "2", "--names", "tiny"]
    assert script.main([*arguments, "--calibration-images", "2"]) == 0
    record = json.loads((out / "precision.json").read_text())
    (result,) = record["results"]
    assert list(result["precisions"]) == ["fp32", "bf16", "int8"] and result["images"] == 2
    fp32, int8 = result["precisions"]["fp32"], result["precisions"]["int8"]
    assert fp32["agreement_with_fp32"] == 1 and 0.9 < int8["agreement_with_fp32"] < 1
    assert list(fp32["per_class_iou"]) == result["class_names"] and len(result["class_names"]) == 11
    table = (out / "precision.md").read_text()
    assert "| tiny | camvid val (2) | int8 |" in table and "Per-class IoU (%), tiny" in table

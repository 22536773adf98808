"""The FLOP counter against hand counts, and scripts/benchmark.py end to end in miniature."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, write_voc_tree
from torch import nn
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from parsenet.config import compose
from parsenet.models import build_model
from parsenet.models.flops import count_macs, forward_flops


def run_benchmark(cwd: Path, *arguments: str, timeout: float = 600) -> None:
    """``scripts/benchmark.py ARGUMENTS`` in a fresh process, which must succeed."""
    command = [sys.executable, str(REPO / "scripts" / "benchmark.py"), *arguments]
    finished = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert finished.returncode == 0, f"benchmark.py failed:\n{finished.stderr[-4000:]}"


def test_mac_count_of_a_small_net_matches_a_hand_count():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 10×10 out: 100 · 8 · 3·3·3 = 21,600
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2),  # 5×5 out: 25 · 16 · 4·3·3 = 14,400
        nn.ConvTranspose2d(16, 4, 4, stride=2, groups=4),  # per input: 25·16 · 1·16 = 6,400
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),  # 4 · 5 = 20
    )
    counts = count_macs(net, torch.zeros(2, 3, 10, 10))  # a batch of 2 doubles everything
    assert counts == {"0": 2 * 21_600, "2": 2 * 14_400, "3": 2 * 6_400, "6": 2 * 20}
    assert forward_flops(net, torch.zeros(1, 3, 10, 10)) == 2 * (21_600 + 14_400 + 6_400 + 20)
    assert not net[0]._forward_hooks  # hooks are removed afterwards


def test_parsenet_forward_is_121_gmac_at_500():
    model = build_model({}, 21).eval()
    counts = count_macs(model, torch.zeros(1, 3, 500, 500))
    assert sum(counts.values()) / 1e9 == pytest.approx(121.0, abs=0.05)  # the paper notes' count
    fc6 = 63 * 63 * 512 * 1024 * 9  # dilation changes nothing; ceil-mode pools give 63×63
    assert counts["backbone.layers.fc6"] == fc6


def test_benchmark_script_writes_a_complete_report(tmp_path: Path):
    voc = write_voc_tree(tmp_path / "voc", {"train": 3, "val": 2}, size=(40, 30))
    out = tmp_path / "bench"
    arguments = [
        "--width=0.0625",
        "--repetitions=1",
        "--warmup=0",
        "--sizes=32",
        "--batch=2",
        "--data=synthetic",
        f"--voc={voc}",
        "--crops=32",
        "--predict-images=2",
        "--peak-size=128",
        "--scaling-sizes=32,48",
        "--scaling-batches=1,2",
        "--profile",
        "--compare-layouts",
        f"--out={out}",
    ]
    for override in (
        f"data.root={tmp_path / 'synthetic'}",
        "data.num_train=8",
        "data.num_val=2",
        "data.height=24",
        "data.width=64",
        "data.num_workers=0",
        "data.augment.crop_size=32",
    ):
        arguments.append(f"--override={override}")
    run_benchmark(tmp_path, *arguments)

    report = json.loads((out / "benchmark.json").read_text())
    environment = report["environment"]
    assert {"command", "versions", "machine", "threads", "settings"} <= environment.keys()
    assert environment["versions"]["torch"] == str(torch.__version__)
    results = report["results"]
    assert set(results) == {"peak", "training", "data", "inference", "predict", "scaling"}
    assert {"float32 torch.mm", "float32 conv1x1", "float32 peak"} <= results["peak"].keys()
    training = results["training"]
    compared = {"step 32 NCHW", "step 32 NHWC", "step 32: NHWC ÷ NCHW", "step 32: default ÷ best"}
    loops = {"step 32", "e2e", "reference", "e2e ÷ step", "e2e ÷ reference"}
    assert loops | compared == training.keys()
    # the default layout is the one auto chooses, the same for the trainer and the reference
    assert training["step 32"]["layout"].split()[0] in ("contiguous", "channels_last")
    assert training["e2e"]["layout"] == training["reference"]["layout"]
    assert training["step 32 NHWC"]["layout"] == "channels_last (setting)"
    assert training["step 32 NCHW"]["layout"] == "contiguous (setting)"
    onnxruntime = "onnxruntime" in report["environment"]["settings"]["backends"]
    whole = {"whole 500×375", "whole 500×375 NCHW", "whole 500×375 NHWC"}
    whole |= {"whole 500×375 onnxruntime"} if onnxruntime else set()
    assert set(results["inference"]) == whole | {"peak memory"}
    assert ("onnxruntime: per image" in results["predict"]) is onnxruntime
    tiny = build_model({"backbone": {"width_mult": 0.0625}}, num_classes=5)  # synthetic: 5
    step_flops = 3 * forward_flops(tiny, torch.zeros(2, 3, 32, 32))
    assert training["step 32"]["gflop_per_step"] == pytest.approx(step_flops / 1e9)
    assert set(results["data"]) == {
        f"{pipeline} {decoder}"
        for pipeline in ("train 32", "eval")
        for decoder in ("pillow", "opencv")
    } | {"decoder agreement"}
    assert results["data"]["decoder agreement"]["max_abs_difference"] == 0
    assert set(results["scaling"]) == {"size 32 batch 1", "size 48 batch 1", "size 32 batch 2"}
    timed = [item for part in results.values() for item in part.values() if "raw" in item]
    # every figure but the decoder agreement and the peak memory
    assert len(timed) == 19 + len(compared) + 2 + (4 if onnxruntime else 0)
    for item in timed:
        assert len(item["raw"]) == 1
        assert all(math.isfinite(value) and value > 0 for value in [item["median"], *item["raw"]])
    assert results["inference"]["peak memory"]["median"] > 0
    assert training["e2e"]["data_wait_s"] >= 0
    for step in ("step_32", "e2e", "reference"):
        assert "Self CPU" in (out / "profiles" / f"{step}.txt").read_text()
        layers = (out / "profiles" / f"{step}_layers.md").read_text()
        assert "| backbone.layers.fc6 |" in layers and "| (loss) |" in layers
        assert "| upsample.deconv |" in layers
    inference = (out / "profiles" / "inference_500x375_layers.md").read_text()
    assert "| backbone.layers.fc6 |" in inference and "GEMM peak: " in inference
    table = (out / "benchmark.md").read_text()
    assert "| e2e ÷ reference |" in table and "### scaling" in table


def load_benchmark(monkeypatch: pytest.MonkeyPatch):
    """scripts/benchmark.py as a module (its parts import as ``benchmarking``)."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_part_names_known_models_only(monkeypatch: pytest.MonkeyPatch):
    benchmark = load_benchmark(monkeypatch)
    from benchmarking.models import DEFAULT_MODELS, unknown_models

    assert unknown_models(DEFAULT_MODELS) == []
    assert "models" not in benchmark.parse_args([]).parts.split(",")  # on request only
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--models=parsenet_vgg16-os8_voc12aug,torchvision:nothing"])


@pytest.mark.slow  # two full-size models, fresh processes, profiles: minutes on 2 cores
def test_models_part_measures_each_model_beside_the_others(tmp_path: Path):
    ours, baseline = "parsenet_mobilenetv3-os16_voc12aug", "torchvision:lraspp_mobilenet_v3_large"
    out = tmp_path / "bench"
    run_benchmark(
        tmp_path,
        "--parts=peak,models",
        f"--models={ours},{baseline}",
        "--sizes=32",
        "--batch=2",
        "--repetitions=1",
        "--warmup=0",
        "--peak-size=128",
        "--no-channels-last",
        f"--out={out}",
    )

    figures = json.loads((out / "benchmark.json").read_text())["results"]["models"]
    inference = "inference 500×375"
    models = {
        ours: build_model(compose("train", [f"experiment={ours}"])["model"], 21),
        baseline: lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21),
    }
    for name, model in models.items():
        step, whole = figures[f"{name} step 32"], figures[f"{name} {inference}"]
        for item in (step, whole):
            assert len(item["raw"]) == 1 and item["median"] > 0 and item["fraction_of_peak"] > 0
        assert whole["layout"] == step["layout"] == "contiguous (setting)"
        parameters = sum(p.numel() for p in model.parameters())
        assert whole["parameters_millions"] == pytest.approx(parameters / 1e6)
        assert whole["peak_memory_mb"] > whole["before_first_image_mb"] > 0
        # the depthwise and dense convolutions carry every counted FLOP, at the rates reported
        convolutions = [
            figures[f"{name} {inference}: {kind} conv"] for kind in ("depthwise", "dense")
        ]
        assert 0 < convolutions[0]["flop_share"] < 0.5
        done = sum(item["gflops"] * item["median"] / 1e3 for item in convolutions)
        assert done == pytest.approx(whole["gflop_per_step"])
        for measure in (inference, "step 32"):
            kinds = ("depthwise conv", "dense conv", "other")
            shares = [figures[f"{name} {measure}: {kind}"]["time_share"] for kind in kinds]
            assert sum(shares) == pytest.approx(1)
    gflop = forward_flops(models[ours].eval(), torch.zeros(1, 3, 375, 500)) / 1e9
    assert figures[f"{ours} {inference}"]["gflop_per_step"] == pytest.approx(gflop)
    step_gflop = 3 * forward_flops(models[ours].train(), torch.zeros(2, 3, 32, 32)) / 1e9
    assert figures[f"{ours} step 32"]["gflop_per_step"] == pytest.approx(step_gflop)
    # inference speed as a multiple of torchvision's LR-ASPP, repetition by repetition
    ratio = figures[f"{ours} {inference} ÷ {baseline}"]["median"]
    speeds = [figures[f"{name} {inference}"]["median"] for name in (ours, baseline)]
    assert ratio == pytest.approx(speeds[0] / speeds[1])
    assert figures[f"{baseline} {inference} ÷ {baseline}"]["median"] == 1
    table = (out / "benchmark.md").read_text()
    assert f"| {ours} | 3.01 | 2.76 |" in table and "| depthwise conv |" in table
    assert (
        out / "profiles" / "models" / f"{ours}_{inference.replace(' ', '_')}_layers.md"
    ).is_file()


# slow: three precisions taking turns, each in a fresh process for its peak memory, six
# parsenet-predict commands and two ONNX Runtime profiles: 7 minutes on 2 cores at load 5
@pytest.mark.slow
def test_precision_part_times_each_precision_beside_torch_float32(tmp_path: Path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("PARSENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PARSENET_EMULATE_BF16", raising=False)
    voc = write_voc_tree(tmp_path / "voc", {"train": 3, "val": 2}, size=(40, 30))
    out = tmp_path / "bench"
    run_benchmark(
        tmp_path,
        "--parts=precision",
        "--width=0.0625",
        "--repetitions=1",
        "--warmup=0",
        f"--voc={voc}",
        "--predict-images=2",
        f"--out={out}",
        timeout=900,
    )
    rows = json.loads((out / "benchmark.json").read_text())["results"]["precision"]
    from parsenet.engine.runtime import cpu_features

    assert rows["CPU instructions"]["vnni"] == cpu_features.has_vnni()
    model = "parsenet-random"  # the benchmark's model (ParseNet, VGG16) with random weights
    running = ["torch fp32", "onnxruntime fp32", "onnxruntime int8"]
    running += ["torch bf16"] if cpu_features.has_bf16() else []
    for name in running:
        whole = rows[f"{model} {name}: whole image 500×375"]
        assert whole["unit"] == "images/s" and whole["median"] > 0 and len(whole["raw"]) == 1
        assert whole["ratio_to_torch_fp32"] > 0 and whole["peak_resident_mb"] > 0
        assert rows[f"{model} {name}: parsenet-predict per image"]["median"] > 0
    assert rows[f"{model} torch fp32: whole image 500×375"]["ratio_to_torch_fp32"] == 1
    if not cpu_features.has_bf16():
        refused = rows[f"{model} torch bf16: refused"]["why"]
        assert refused.startswith("precision=bf16 needs a CPU with bf16 instructions")
    # ONNX Runtime's own profile: the int8 session runs integer convolutions, float32 none
    float_ops = rows[f"{model} onnxruntime fp32: ONNX Runtime profile per run"]
    int8_ops = rows[f"{model} onnxruntime int8: ONNX Runtime profile per run"]
    assert "op Conv" in float_ops and "op QLinearConv" not in float_ops
    assert int8_ops["op QLinearConv"] > 0 and int8_ops["median"] >= int8_ops["op QLinearConv"]
    table = (out / "benchmark.md").read_text()
    assert f"| {model} onnxruntime int8: whole image 500×375 |" in table

"""CUDA checks: ``pytest -m gpu`` runs them on a machine with a CUDA device; elsewhere each is
skipped with the same one-line reason. ``scripts/device_check.sh`` runs them with the benchmark.

Every comparison with the CPU is held to a bound that a wrong result exceeds; the helpers and
their bounds (with the figures they rest on) are in ``tests/device_compare.py``. Each test
records what it measured (largest difference, pixels differing, steps per second, peak memory,
…) in the JSON-lines file ``PARSENET_CHECK_FIGURES`` names, when set; the device check puts
them on its summary lines.

``PARSENET_GPU_TESTS_DEVICE=cpu`` runs the same tests on the CPU in miniature (a 1/16-width
model, a few iterations, tiny strips). The device is then played by a copy of the model that
differs from the CPU's as a GPU's would: computing in float64 (for the float32 comparison) or
with its convolutions rounded to TF32 (evaluation, prediction), so every comparison meets real
differences. ``tests/test_device_compare.py`` runs a selection of them so on every commit.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import REPO
from device_compare import (
    AUTOCAST,
    FLOAT32,
    TF32,
    ConfusionComparison,
    Float64Copy,
    LabelComparison,
    ResumeComparison,
    ScoreComparison,
    StateComparison,
    assert_applied,
    dtype_names,
    logged_l2norms,
    observed_training,
    tf32_copy,
)
from PIL import Image
from torch import nn

import parsenet
from parsenet.config import compose
from parsenet.data import build_dataset
from parsenet.data.base import read_image
from parsenet.data.loader import loader_workers
from parsenet.data.transforms import eval_transform
from parsenet.engine.runtime.checkpoint import load_checkpoint
from parsenet.engine.runtime.process import (
    CUBLAS_WORKSPACE,
    deterministic_algorithms,
    peak_memory_mb,
    strict_float32,
)
from parsenet.engine.scoring.inference import InferenceMode
from parsenet.engine.training.trainer import Trainer
from parsenet.metrics import ConfusionMatrix
from parsenet.models import build_model
from parsenet.models.l2norm import L2Norm

TARGET = torch.device(os.environ.get("PARSENET_GPU_TESTS_DEVICE", "cuda"))
ON_GPU = TARGET.type == "cuda"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        ON_GPU and not torch.cuda.is_available(),
        reason="no CUDA device (these run where one is: pytest -m gpu, scripts/device_check.sh)",
    ),
]
# cuBLAS reads its workspace setting when PyTorch first uses it: before any test touches CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)

WIDTH = 1.0 if ON_GPU else 0.0625  # the paper's network on the GPU
ITERATIONS = 50 if ON_GPU else 8
BATCH = 8 if ON_GPU else 2
IMAGE_SIZE = (375, 500) if ON_GPU else (48, 64)  # H×W of the float32 parity check
# 64×512 strips on the GPU (the synthetic set's own size), 24×64 in miniature.
SYNTHETIC = (
    ["data.num_train=400", "data.num_val=20", "data.num_workers=1"]
    if ON_GPU
    else ["data.num_train=16", "data.num_val=4", "data.height=24", "data.width=64"]
    + ["data.num_workers=0"]
)
INFERENCE_MODES = {
    "slide": InferenceMode("slide", crop=128, stride=96)
    if ON_GPU
    else InferenceMode("slide", 32, 24),
    "msflip": InferenceMode("msflip", scales=(0.75, 1.0, 1.25), flip=True),
}
WHOLE = InferenceMode("whole")
MAX_DATA_WAIT = 0.10  # share of a training step spent waiting for the loader
# The trunks of model/backbone=… besides the paper's, one bf16 training step each (and a few
# more, timed) with ParseNet's head on the synthetic strips.
NEW_TRUNKS = ("resnet50_d8", "mobilenet_v3_large")
TRUNK_STEPS = 6 if ON_GPU else 2  # the first untimed (cuDNN's choices, allocations)


def record(figure: str, **values: Any) -> None:
    """Print this test's figure and append it to ``$PARSENET_CHECK_FIGURES`` (JSON lines)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].split("::")[-1]
    print(f"{test}: {figure}")
    path = os.environ.get("PARSENET_CHECK_FIGURES")
    if path:
        with open(path, "a") as lines:
            lines.write(json.dumps({"test": test, "figure": figure, **values}) + "\n")


def run_module(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 400):
    """``python -m module args`` from the repository; its output on failure."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )
    assert result.returncode == 0, (
        f"{module} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


def overrides(
    data_root: Path,
    *extra: str,
    device: torch.device = TARGET,
    model: tuple[str, ...] = (f"model.backbone.width_mult={WIDTH}",),
) -> list[str]:
    """Training on the shared synthetic strips: the tested width (or ``model``'s overrides),
    random weights, AdamW, no overlays, no evaluation before the end, every iteration logged,
    the plain layout, no snapshots (``extra`` comes last: later overrides of a key win)."""
    return [
        f"device={device}",
        *model,
        "model.backbone.pretrained=none",  # random weights: nothing to download
        *SYNTHETIC,
        f"paths.data_root={data_root}",
        "optim=adamw",
        f"train.batch_size={BATCH}",
        "train.num_overlays=0",
        "train.eval_every=0",
        "train.log_every=1",
        "train.channels_last=false",
        "train.keep_snapshots=0",
        *extra,
    ]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic set for every test here (generated by the first run that reads it)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.pt`` of a model trained on the device for ``ITERATIONS`` iterations."""
    run = tmp_path_factory.mktemp("trained")
    parsenet.train(compose("train", overrides(data_root, f"train.max_iters={ITERATIONS}")), run)
    return run / "checkpoints" / "last.pt"


def device_model(checkpoint: Path, on_cpu: nn.Module) -> nn.Module:
    """The checkpoint's model on the device, at PyTorch's default float32 (TF32 convolutions
    on recent GPUs); with the CPU standing in, ``on_cpu`` with its convolutions rounded to TF32."""
    if ON_GPU:
        return parsenet.load_for_inference(checkpoint, TARGET).model
    return tf32_copy(on_cpu)


def reset_peak_memory() -> None:
    """Start the device's peak-memory count afresh (a CPU process's peak cannot be reset)."""
    if ON_GPU:
        torch.cuda.reset_peak_memory_stats(TARGET)


def peak_memory() -> str:
    """The peak memory since :func:`reset_peak_memory`, named for what it is."""
    found = peak_memory_mb(TARGET)
    return f"peak memory {found:.0f} MiB" if ON_GPU else f"peak RSS {found:.0f} MiB (CPU)"


def test_float32_logits_equal_the_cpu_logits():
    torch.manual_seed(0)
    model = build_model({"backbone": {"width_mult": WIDTH}}, 21).eval()
    images = torch.randn(1, 3, *IMAGE_SIZE)
    with torch.no_grad(), strict_float32():
        expected = model(images)
        on_device = model.to(TARGET) if ON_GPU else Float64Copy(model)
        got = on_device(images.to(TARGET)).cpu()
    comparison = ScoreComparison(FLOAT32)
    comparison.add(got[0], expected[0])
    record(
        f"{IMAGE_SIZE[0]}×{IMAGE_SIZE[1]}, width {WIDTH}, TF32 off: {comparison.figure()}",
        largest=comparison.largest,
    )
    comparison.check()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_agrees_with_float32_and_l2norm_stays_float32(amp: str, trained: Path):
    loaded = parsenet.load_for_inference(trained, TARGET)
    dataset = build_dataset(loaded.data_config, "val", eval_transform(loaded.normalization))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    comparison = ScoreComparison(AUTOCAST[amp])
    with logged_l2norms() as norms:
        for index in range(len(dataset)):
            image = dataset[index]["image"][None].to(TARGET)
            with torch.no_grad():
                with strict_float32():
                    expected = loaded.model(image)[0].cpu()
                with torch.autocast(TARGET.type, dtype=dtype):
                    got = loaded.model(image)[0].float().cpu()
            comparison.add(got, expected)
    layers = sum(isinstance(module, L2Norm) for module in loaded.model.modules())
    computed = set().union(*norms.computed)
    record(
        f"against float32 with TF32 off: {comparison.figure()}; {layers} L2Norm layers × "
        f"{len(dataset)} images got {', '.join(dtype_names(set(norms.inputs)))} and computed "
        f"in {', '.join(dtype_names(computed))}",
        largest=comparison.largest,
    )
    assert len(norms.computed) == 2 * layers * len(dataset)  # float32, then autocast
    assert dtype in norms.inputs  # autocast reached the L2Norm layers…
    assert computed == {torch.float32}  # …which computed in float32 all the same
    comparison.check()


TRAINING_MODES = {
    "float32": [],
    "bf16": ["train.amp=bf16"],
    "fp16": ["train.amp=fp16"],
    "channels_last": ["train.channels_last=true"],
    "compile": ["train.compile=true"],
}


def timed_steps(trainer: Trainer, count: int) -> tuple[list[dict[str, float]], Any]:
    """``count`` training steps, watched (:func:`device_compare.observed_training`)."""
    batches = iter(trainer.train_loader())
    with observed_training(trainer) as observed:
        steps = [trainer.train_step(batches) for _ in range(count)]
    return steps, observed


def speed(steps: list[dict[str, float]]) -> str:
    """Steps per second and images per second (the median step after the first)."""
    seconds = statistics.median(step["step_seconds"] for step in steps[1:])
    return f"{1 / seconds:.2f} steps/s ({BATCH / seconds:.1f} images/s, batch {BATCH})"


@pytest.mark.parametrize("mode", list(TRAINING_MODES))
def test_parsenet_train_in_each_precision_and_layout(mode: str, data_root: Path, tmp_path: Path):
    """Each mode trains, and was applied: autocast's dtype in the convolutions' outputs with
    L2Norm in float32, the gradient scaler for fp16, weights and batches in NHWC, the model
    compiled by Dynamo (its frames counted)."""
    cfg = compose("train", overrides(data_root, *TRAINING_MODES[mode]))
    reset_peak_memory()
    steps, observed = timed_steps(Trainer(cfg, tmp_path / mode), ITERATIONS)
    found = [step["loss"] for step in steps]
    window = max(2, ITERATIONS // 5)
    first, last = np.mean(found[:window]), np.mean(found[-window:])
    record(
        f"loss {first:.3f} → {last:.3f} (means of the first and last {window} of {ITERATIONS} "
        f"steps), {'all finite' if np.isfinite(found).all() else 'NOT FINITE'}; {speed(steps)}, "
        f"{peak_memory()}; seen: {observed.figure()}",
        first=first,
        last=last,
    )
    assert np.isfinite(found).all(), found
    assert last < first
    assert_applied(observed, mode)


@pytest.mark.parametrize("arch", NEW_TRUNKS)
def test_one_bf16_training_step_per_new_trunk(arch: str, data_root: Path, tmp_path: Path):
    trunk = (f"model/backbone={arch}",)
    cfg = compose("train", overrides(data_root, "train.amp=bf16", model=trunk))
    reset_peak_memory()
    steps, observed = timed_steps(Trainer(cfg, tmp_path / arch), TRUNK_STEPS)
    found = [step["loss"] for step in steps]
    record(
        f"{arch} + ParseNet head, bf16, strips {cfg['data']['height']}×{cfg['data']['width']}: "
        f"{speed(steps)}, {peak_memory()}, losses {', '.join(f'{x:.3f}' for x in found)}",
        losses=found,
    )
    assert np.isfinite(found).all(), found
    assert_applied(observed, "bf16")


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_exact_resume_with_deterministic_algorithms(data_root: Path, tmp_path: Path):
    """N + resume + N = 2N (dropout, flips, shuffling and loader workers all in play)."""
    half = ITERATIONS // 10 or 1
    settings = overrides(
        data_root,
        f"train.max_iters={2 * half}",
        f"train.checkpoint_every={half}",
        "train.keep_snapshots=5",
    )
    snapshot = tmp_path / "whole" / "checkpoints" / f"iter_{half:06d}.pt"
    with deterministic_algorithms(warn_only=True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parsenet.train(compose("train", settings), tmp_path / "whole")
        parsenet.train(
            compose("train", [*settings, f"train.resume={snapshot}"]), tmp_path / "rerun"
        )
    marker = " does not have a deterministic implementation"
    operators = sorted(
        {str(w.message).split(marker)[0] for w in caught if marker in str(w.message)}
    )
    comparison = ResumeComparison(
        weights(tmp_path / "whole"), weights(tmp_path / "rerun"), tuple(operators)
    )
    record(f"{half} + resume + {half} = {2 * half}: {comparison.figure()}")
    comparison.check()


CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}


def round_trip(
    checkpoint: Path, data_root: Path, run: Path, device: torch.device, env: dict | None = None
) -> StateComparison:
    """``checkpoint`` resumed on ``device`` (in a CPU-only process where ``env`` hides the
    GPUs) at its own iteration, so the run takes no step and writes back what it read."""
    iteration = load_checkpoint(checkpoint)["iteration"]
    arguments = overrides(
        data_root, f"train.resume={checkpoint}", f"train.max_iters={iteration}", device=device
    )
    run_module("parsenet.cli.train", *arguments, f"hydra.run.dir={run}", env=env)
    rewritten = load_checkpoint(run / "checkpoints" / "last.pt")
    return StateComparison(load_checkpoint(checkpoint), rewritten)


def test_checkpoints_move_between_the_gpu_and_a_cpu_only_process(
    trained: Path, data_root: Path, tmp_path: Path
):
    """Written on the device → read, evaluated and trained on in a process that sees no GPU;
    written there → read, evaluated and trained on on the device. What is read is what was
    written (model, optimiser, schedule, scaler, counters: every tensor bit for bit), and the
    device's scores of the CPU's checkpoint are the CPU's within the TF32 bound."""
    cpu = torch.device("cpu")
    to_cpu = round_trip(trained, data_root, tmp_path / "read_on_cpu", cpu, CPU_ONLY)
    run_module(
        "parsenet.cli.evaluate",
        f"checkpoint={trained}",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'eval_on_cpu'}",
        env=CPU_ONLY,
    )
    evaluated_on_cpu = json.loads((tmp_path / "eval_on_cpu" / "metrics.json").read_text())
    onward = tmp_path / "resumed_on_cpu"
    resume = [f"train.resume={trained}", f"train.max_iters={ITERATIONS + 1}"]
    run_module(
        "parsenet.cli.train",
        *overrides(data_root, *resume, device=cpu),
        f"hydra.run.dir={onward}",
        env=CPU_ONLY,
    )
    continued = load_checkpoint(onward / "checkpoints" / "last.pt")["iteration"]
    on_cpu = tmp_path / "trained_on_cpu"
    run_module(
        "parsenet.cli.train",
        *overrides(data_root, "train.max_iters=1", device=cpu),
        f"hydra.run.dir={on_cpu}",
        env=CPU_ONLY,
    )
    written = on_cpu / "checkpoints" / "last.pt"
    to_device = round_trip(written, data_root, tmp_path / "read_on_device", TARGET)
    result = parsenet.evaluate(written, data={"num_workers": 0}, device=str(TARGET))
    scores, matrices = compare_evaluation(written, WHOLE, result.confusion)
    record(
        f"{TARGET} → CPU-only process: read back {to_cpu.figure()}; evaluated there (mIoU "
        f"{evaluated_on_cpu['mIoU']:.4f}), trained on to iteration {continued}. CPU-only "
        f"process → {TARGET}: read back {to_device.figure()}; evaluated: {scores.figure()}; "
        f"{matrices.figure()}",
        largest=scores.largest,
    )
    assert "cuda" not in load_checkpoint(written)["rng"][0]
    assert continued == ITERATIONS + 1
    for comparison in (to_cpu, to_device, scores, matrices):
        comparison.check()


def compare_evaluation(
    checkpoint: Path, mode: InferenceMode, confusion: np.ndarray
) -> tuple[ScoreComparison, ConfusionComparison]:
    """A device's confusion matrix of a checkpoint's validation split against the CPU's, in one
    mode, and the device's scores image by image against the CPU's (:data:`TF32`'s bound)."""
    on_cpu = parsenet.load_for_inference(checkpoint, "cpu")
    on_device = device_model(checkpoint, on_cpu.model)
    dataset = build_dataset(on_cpu.data_config, "val", eval_transform(on_cpu.normalization))
    expected = ConfusionMatrix(on_cpu.num_classes, on_cpu.ignore_index)
    scores = ScoreComparison(TF32)
    for index in range(len(dataset)):
        sample = dataset[index]
        with torch.no_grad():
            cpu_scores = mode.scores(on_cpu.model, sample["image"][None])[0]
            got = mode.scores(on_device, sample["image"][None].to(TARGET))[0].cpu()
        labels = torch.as_tensor(sample["label"]).long()
        scores.add(got, cpu_scores, labels != on_cpu.ignore_index)
        expected.update(cpu_scores.argmax(0), labels)
    return scores, ConfusionComparison(confusion, expected.matrix.numpy(), scores.near_ties)


def check_evaluation(
    checkpoint: Path, mode: InferenceMode, confusion: np.ndarray, described: str = ""
) -> None:
    """:func:`compare_evaluation`, its figures recorded, then checked."""
    scores, matrices = compare_evaluation(checkpoint, mode, confusion)
    record(
        f"{described}{scores.figure()}; {matrices.figure()}",
        largest=scores.largest,
        differing=scores.differing,
        moved=matrices.moved,
    )
    scores.check()
    matrices.check()


def test_evaluation_gives_the_cpu_confusion_matrix(trained: Path):
    on_device = parsenet.evaluate(trained, data={"num_workers": 0}, device=str(TARGET))
    check_evaluation(trained, WHOLE, on_device.confusion, f"mIoU {on_device.miou:.4f}; ")


@pytest.mark.parametrize("mode", ["slide", "msflip"])
def test_slide_and_msflip_evaluation(mode: str, trained: Path, tmp_path: Path):
    inference = INFERENCE_MODES[mode]
    if mode == "slide":
        settings = [
            f"inference.slide.crop={inference.crop}",
            f"inference.slide.stride={inference.stride}",
        ]
    else:
        scales = ",".join(str(scale) for scale in inference.scales)
        settings = [
            f"inference.msflip.scales=[{scales}]",
            f"inference.msflip.flip={str(inference.flip).lower()}",
        ]
    run_module(
        "parsenet.cli.evaluate",
        f"checkpoint={trained}",
        f"device={TARGET}",
        f"inference={mode}",
        *settings,
        f"hydra.run.dir={tmp_path}",
    )
    scores = json.loads((tmp_path / "metrics.json").read_text())
    assert scores["inference"] == inference.describe()
    shown = ", ".join(f"{key} {value}" for key, value in inference.describe().items())
    described = f"{shown}: mIoU {scores['mIoU']:.4f}; "
    check_evaluation(trained, inference, np.load(tmp_path / "confusion.npy"), described)


def test_predict_and_export(trained: Path, data_root: Path, tmp_path: Path):
    images = sorted((data_root / "synthetic").rglob("JPEGImages/*.jpg"))[:6]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for image in images:
        (inputs / image.name).symlink_to(image)
    on_cpu = parsenet.load_for_inference(trained, "cpu")
    expected = []
    with torch.no_grad():
        for path in images:
            image = on_cpu.normalization(read_image(path))[None]
            expected.append(on_cpu.model(image)[0])
    comparisons = {}  # the CPU's own labels too: the reference is what predict computes
    for device, bound in {str(TARGET): TF32, "cpu": FLOAT32}.items():
        run = tmp_path / f"predict_{device.replace(':', '_')}"
        run_module(
            "parsenet.cli.predict",
            f"checkpoint={trained}",
            f"inputs={inputs}",
            f"device={device}",
            f"hydra.run.dir={run}",
        )
        comparisons[device] = LabelComparison(bound)
        for path, scores in zip(images, expected, strict=True):
            labels = np.asarray(Image.open(run / "labels" / f"{path.stem}.png"))
            comparisons[device].add(labels, scores)
    exported = {}
    for fmt in ("torchscript", "onnx"):
        run = tmp_path / f"export_{fmt}"
        run_module("parsenet.cli.export", f"checkpoint={trained}", f"format={fmt}",
                   f"hydra.run.dir={run}")  # fmt: skip
        about = json.loads((run / "export.json").read_text())
        exported[fmt] = min(result["argmax_agreement"] for result in about["parity"])
    # The TorchScript file (traced on the CPU) on the device, against the eager model there.
    scripted = torch.jit.load(str(tmp_path / "export_torchscript" / "model.pt"), TARGET)
    eager = parsenet.load_for_inference(trained, TARGET).model
    images = torch.randn(1, 3, *IMAGE_SIZE, device=TARGET)
    scripted_scores = ScoreComparison(TF32)
    with torch.no_grad():
        scripted_scores.add(scripted(images)[0].cpu(), eager(images)[0].cpu())
    providers = onnx_providers()
    predicted = "; ".join(
        f"predict on {key}: {found.figure()}" for key, found in comparisons.items()
    )
    record(
        f"{predicted}; export parity (CPU) torchscript "
        f"{100 * exported['torchscript']:.3f} %, onnx {100 * exported['onnx']:.3f} %; "
        f"TorchScript on {TARGET} against eager: {scripted_scores.figure()}; onnxruntime "
        f"providers: {', '.join(providers)}",
        largest=scripted_scores.largest,
    )
    for comparison in (*comparisons.values(), scripted_scores):
        comparison.check()


def onnx_providers() -> list[str]:
    """onnxruntime's execution providers (whether it could run the ONNX file on the GPU)."""
    try:
        import onnxruntime
    except ImportError:
        return ["onnxruntime missing"]
    return list(onnxruntime.get_available_providers())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


ONE_RANK_GROUP = """
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

import parsenet
from parsenet.config import compose
from parsenet.engine.runtime.distributed import DistContext


@dataclass(frozen=True)
class OneRankGroup(DistContext):
    @property
    def distributed(self) -> bool:  # DDP and every collective, through a group of one
        return True


device = torch.device(sys.argv[1])
if device.type == "cuda":
    torch.cuda.set_device(device)
backend = "nccl" if device.type == "cuda" else "gloo"
dist.init_process_group(backend, init_method=sys.argv[2], rank=0, world_size=1)
context = OneRankGroup(0, 1, device)
run = sys.argv[3]
parsenet.train(compose("train", sys.argv[4:]), run, context)
result = parsenet.evaluate(f"{run}/checkpoints/last.pt", context=context)
dist.barrier()
dist.destroy_process_group()
print(f"backend {backend}: mIoU {result.miou:.4f}")
"""


def test_torchrun_and_an_nccl_group_train_and_evaluate(data_root: Path, tmp_path: Path):
    arguments = overrides(data_root, "train.max_iters=2", "train.eval_every=1")
    torchrun = ["torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m"]
    run_module(
        *torchrun, "parsenet.cli.train", *arguments, f"hydra.run.dir={tmp_path / 'torchrun'}"
    )
    checkpoint = tmp_path / "torchrun" / "checkpoints" / "last.pt"
    run_module(
        *torchrun,
        "parsenet.cli.evaluate",
        f"checkpoint={checkpoint}",
        f"device={TARGET}",
        f"hydra.run.dir={tmp_path / 'torchrun_eval'}",
    )
    assert (tmp_path / "torchrun_eval" / "metrics.json").is_file()
    # torchrun with one process needs no process group; a group of one exercises NCCL itself:
    # DDP's gradient all-reduce, the stop-flag all-reduce, object gathers, barriers, sharding.
    device = torch.device("cuda", TARGET.index or 0) if ON_GPU else TARGET
    script = tmp_path / "one_rank_group.py"
    script.write_text(ONE_RANK_GROUP)
    group = subprocess.run(
        [sys.executable, str(script), str(device), f"tcp://127.0.0.1:{free_port()}"]
        + [str(tmp_path / "group"), *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert group.returncode == 0, group.stderr[-5000:]
    line = group.stdout.strip().splitlines()[-1]
    record(
        f"torchrun --nproc_per_node=1: trained and evaluated on {TARGET}; one-rank process "
        f"group: DDP trained and evaluated ({line})"
    )
    assert line.startswith("backend nccl" if ON_GPU else "backend gloo")


def camvid_root() -> Path | None:
    """The CamVid images the device check copied, or ``PARSENET_CAMVID``, if any."""
    for candidate in (
        os.environ.get("PARSENET_CAMVID"),
        REPO / ".device_data" / "camvid",
        REPO.parent / "shared" / "datasets" / "camvid",
    ):
        if candidate and (Path(candidate) / "train.txt").is_file():
            return Path(candidate)
    return None


def test_the_loader_keeps_the_gpu_fed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Pinned batches copied without blocking, workers by default for many cores, persistent
    evaluation workers, and steps that hardly wait for data (CamVid images, crops of 512)."""
    root = camvid_root()
    if root is None:
        pytest.skip("no CamVid images: run scripts/device_data.sh, or set PARSENET_CAMVID")
    speed = ["train.amp=bf16", "train.channels_last=true"] if ON_GPU else []
    speed = speed or ["train.channels_last=false"]
    crop = 512 if ON_GPU else 64
    cfg = compose(
        "train",
        [
            "data=camvid",
            f"data.root={root}",
            f"data.augment.crop_size={crop}",
            f"device={TARGET}",
            f"model.backbone.width_mult={WIDTH}",
            "model.backbone.pretrained=none",
            f"train.batch_size={BATCH}",
            "train.num_overlays=0",
            *speed,
        ],
    )
    assert cfg["data"]["num_workers"] == "auto"  # the default
    trainer = Trainer(cfg, tmp_path / "run")
    loader, evaluation = trainer.train_loader(), trainer.validation.loader
    workers = loader_workers("auto")
    assert loader.num_workers == evaluation.num_workers == workers
    assert workers == max(1, min(12, len(os.sched_getaffinity(0)) - 2))
    assert evaluation.persistent_workers
    assert loader.pin_memory == evaluation.pin_memory == ON_GPU
    copies: list[tuple[bool, bool]] = []
    plain_to = torch.Tensor.to

    def logged_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, torch.device) and target.type == "cuda" and not self.is_cuda:
            copies.append((self.is_pinned(), bool(kwargs.get("non_blocking"))))
        return plain_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", logged_to)
    batches = iter(loader)
    steps = [trainer.train_step(batches) for _ in range(60 if ON_GPU else 6)]
    monkeypatch.setattr(torch.Tensor, "to", plain_to)
    timed = steps[len(steps) // 6 :]  # after the workers' start
    waited = sum(step["data_seconds"] for step in timed) / sum(s["step_seconds"] for s in timed)
    images_per_second = BATCH * len(timed) / sum(step["step_seconds"] for step in timed)
    record(
        f"{workers} workers (auto, {len(os.sched_getaffinity(0))} CPUs), pinned memory "
        f"{loader.pin_memory}, non-blocking copies {sum(nb for _, nb in copies)}/{len(copies)}, "
        f"persistent evaluation workers; waited for data {100 * waited:.1f} % of the step time "
        f"at {images_per_second:.0f} images/s (crop {crop}, batch {BATCH})",
        data_wait=waited,
        workers=workers,
    )
    if ON_GPU:
        assert copies and all(pinned and blocking_free for pinned, blocking_free in copies)
        assert waited <= MAX_DATA_WAIT

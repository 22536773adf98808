"""CUDA checks: ``pytest -m gpu`` runs them on a machine with a CUDA device; elsewhere each is
skipped with the same one-line reason. ``scripts/device_check.sh`` runs them with the benchmark.

Each test records its figure (logit difference, argmax agreement, losses, …) in the JSON-lines
file ``PARSENET_CHECK_FIGURES`` names, when set; the device check puts them on its summary lines.

``PARSENET_GPU_TESTS_DEVICE=cpu`` runs the same tests on the CPU in miniature (a 1/16-width
model, a few iterations, tiny strips) to check the tests themselves where there is no GPU; the
comparisons with the CPU then compare the CPU with itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image
from torch.overrides import TorchFunctionMode

import parsenet
from parsenet.config import compose
from parsenet.data import build_dataset
from parsenet.data.loader import loader_workers
from parsenet.data.transforms import eval_transform
from parsenet.engine.runtime.checkpoint import load_checkpoint
from parsenet.engine.runtime.process import (
    CUBLAS_WORKSPACE,
    deterministic_algorithms,
    strict_float32,
)
from parsenet.engine.scoring.inference import InferenceMode
from parsenet.engine.training.trainer import Trainer
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
ITERATIONS = 50 if ON_GPU else 12
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
MIN_AUTOCAST_AGREEMENT = 0.99
MAX_RELATIVE_DIFFERENCE = 1e-4
# Weights after N + resume + N against 2N, should an operator have no deterministic CUDA kernel.
RESUME_TOLERANCE = {"rtol": 1e-5, "atol": 1e-7}
MAX_DATA_WAIT = 0.10  # share of a training step spent waiting for the loader


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


def overrides(data_root: Path, *extra: str, device: torch.device = TARGET) -> list[str]:
    """Training on the shared synthetic strips: the tested width, AdamW, no overlays, no
    evaluation before the end, every iteration logged, the plain layout, no snapshots (``extra``
    comes last: later overrides of a key win)."""
    return [
        f"device={device}",
        f"model.backbone.width_mult={WIDTH}",
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


def losses(run: Path) -> list[float]:
    """The training losses a run logged, in order."""
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return [entry["train/loss"] for entry in map(json.loads, lines) if "train/loss" in entry]


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


def relative_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    """‖got − expected‖ / ‖expected‖."""
    return ((got - expected).norm() / expected.norm()).item()


def test_float32_logits_equal_the_cpu_logits():
    torch.manual_seed(0)
    model = build_model({"backbone": {"width_mult": WIDTH}}, 21).eval()
    images = torch.randn(1, 3, *IMAGE_SIZE)
    with torch.no_grad(), strict_float32():
        expected = model(images)
        got = model.to(TARGET)(images.to(TARGET)).cpu()
    difference = relative_difference(got, expected)
    largest = ((got - expected).abs().max() / expected.abs().max()).item()
    record(
        f"relative difference {difference:.2e} (largest element {largest:.2e}) at "
        f"{IMAGE_SIZE[0]}×{IMAGE_SIZE[1]}, width {WIDTH}, TF32 off",
        relative_difference=difference,
    )
    assert difference <= MAX_RELATIVE_DIFFERENCE


class DtypeLog(TorchFunctionMode):
    """The name and result dtype of every torch function called inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, torch.dtype]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if isinstance(result, torch.Tensor):
            self.calls.append((getattr(func, "__name__", str(func)), result.dtype))
        return result


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_agrees_with_float32_and_l2norm_stays_float32(
    amp: str, trained: Path, monkeypatch: pytest.MonkeyPatch
):
    loaded = parsenet.load_for_inference(trained, TARGET)
    inputs: list[torch.dtype] = []
    logs: list[DtypeLog] = []
    plain_forward = L2Norm.forward

    def logged_forward(self: L2Norm, x: torch.Tensor) -> torch.Tensor:
        inputs.append(x.dtype)
        with DtypeLog() as log:
            logs.append(log)
            return plain_forward(self, x)

    dataset = build_dataset(loaded.data_config, "val", eval_transform(loaded.normalization))
    same, total = 0, 0
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    for index in range(len(dataset)):
        image = dataset[index]["image"][None].to(TARGET)
        with torch.no_grad():
            expected = loaded.model(image).argmax(1)
            monkeypatch.setattr(L2Norm, "forward", logged_forward)
            with torch.autocast(TARGET.type, dtype=dtype):
                got = loaded.model(image).argmax(1)
            monkeypatch.setattr(L2Norm, "forward", plain_forward)
        same += (got == expected).sum().item()
        total += got.numel()
    agreement = same / total
    norms = sum(isinstance(module, L2Norm) for module in loaded.model.modules())
    assert len(logs) == norms * len(dataset)
    assert dtype in inputs  # autocast reached the L2Norm layers…
    for log in logs:  # …which computed in float32 all the same
        computed = [(name, result) for name, result in log.calls if name in ("pow", "sum", "sqrt")]
        assert [name for name, _ in computed].count("sqrt") == 1, log.calls
        assert all(result == torch.float32 for _, result in computed), log.calls
    record(
        f"argmax agreement with float32 {100 * agreement:.3f} % over {total} pixels; "
        f"{norms} L2Norm layers × {len(dataset)} images computed in float32",
        agreement=agreement,
    )
    assert agreement >= MIN_AUTOCAST_AGREEMENT


TRAINING_MODES = {
    "float32": [],
    "bf16": ["train.amp=bf16"],
    "fp16": ["train.amp=fp16"],
    "channels_last": ["train.channels_last=true"],
    "compile": ["train.compile=true"],
}


@pytest.mark.parametrize("mode", list(TRAINING_MODES))
def test_parsenet_train_in_each_precision_and_layout(mode: str, data_root: Path, tmp_path: Path):
    run = tmp_path / mode
    arguments = overrides(data_root, f"train.max_iters={ITERATIONS}", *TRAINING_MODES[mode])
    run_module("parsenet.cli.train", *arguments, f"hydra.run.dir={run}")
    found = losses(run)
    assert len(found) == ITERATIONS
    assert all(np.isfinite(found)), found
    window = max(2, ITERATIONS // 5)
    first, last = np.mean(found[:window]), np.mean(found[-window:])
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    scale = checkpoint["scaler"].get("scale")
    scaler = f", gradient scaler at {scale:g}" if mode == "fp16" else ""
    record(
        f"loss {first:.3f} → {last:.3f} (means of the first and last {window} of {ITERATIONS} "
        f"iterations), all finite{scaler}",
        first=first,
        last=last,
    )
    assert last < first
    if mode == "fp16":
        assert scale is not None and scale > 0


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
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "rerun")
    assert whole.keys() == resumed.keys()
    identical = all(torch.equal(whole[key], resumed[key]) for key in whole)
    largest = max((whole[key] - resumed[key]).abs().max().item() for key in whole)
    named = f"; no deterministic kernel: {', '.join(operators)}" if operators else ""
    record(
        f"{half} + resume + {half} = {2 * half}: "
        + ("bit-identical" if identical else f"largest weight difference {largest:.2e}")
        + named,
        identical=identical,
        operators=operators,
    )
    if not operators:
        assert identical, f"weights differ by up to {largest:.2e} with deterministic algorithms"
    else:  # the tightest tolerance that holds for those operators
        for key in whole:
            torch.testing.assert_close(resumed[key], whole[key], **RESUME_TOLERANCE)


CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}


def test_checkpoints_move_between_the_gpu_and_a_cpu_only_process(
    trained: Path, data_root: Path, tmp_path: Path
):
    cpu = torch.device("cpu")
    # Written on the device → evaluated and trained on in a process that sees no GPU.
    run_module(
        "parsenet.cli.evaluate",
        f"checkpoint={trained}",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'eval_on_cpu'}",
        env=CPU_ONLY,
    )
    onward = tmp_path / "resumed_on_cpu"
    resume = [f"train.resume={trained}", f"train.max_iters={ITERATIONS + 1}"]
    run_module(
        "parsenet.cli.train",
        *overrides(data_root, *resume, device=cpu),
        f"hydra.run.dir={onward}",
        env=CPU_ONLY,
    )
    assert load_checkpoint(onward / "checkpoints" / "last.pt")["iteration"] == ITERATIONS + 1
    # Written in a CPU-only process → evaluated and trained on on the device.
    on_cpu = tmp_path / "trained_on_cpu"
    run_module(
        "parsenet.cli.train",
        *overrides(data_root, "train.max_iters=1", device=cpu),
        f"hydra.run.dir={on_cpu}",
        env=CPU_ONLY,
    )
    written = on_cpu / "checkpoints" / "last.pt"
    assert "cuda" not in load_checkpoint(written)["rng"][0]
    result = parsenet.evaluate(written, data={"num_workers": 0}, device=str(TARGET))
    continued = tmp_path / "resumed_on_device"
    parsenet.train(
        compose("train", overrides(data_root, f"train.resume={written}", "train.max_iters=2")),
        continued,
    )
    assert load_checkpoint(continued / "checkpoints" / "last.pt")["iteration"] == 2
    record(
        f"{TARGET} → CPU-only process: evaluated, trained on to iteration {ITERATIONS + 1}; "
        f"CPU-only process → {TARGET}: evaluated (mIoU {result.miou:.3f}), trained on"
    )


def assert_cpu_confusion_but_ties(
    checkpoint: Path, mode: InferenceMode, confusion: np.ndarray, described: str
) -> None:
    """The device's confusion matrix of a checkpoint's validation split against the CPU's, in
    one mode: every scored pixel that the two predict differently must be a tie (the CPU's
    margin between the two classes within twice the largest score difference at that pixel),
    and the matrices may differ by no more pixels than that."""
    on_cpu = parsenet.load_for_inference(checkpoint, "cpu")
    on_device = parsenet.load_for_inference(checkpoint, TARGET)
    dataset = build_dataset(on_cpu.data_config, "val", eval_transform(on_cpu.normalization))
    classes = on_cpu.num_classes
    expected_confusion = np.zeros((classes, classes), dtype=np.int64)
    ties, others = 0, 0
    for index in range(len(dataset)):
        sample = dataset[index]
        with torch.no_grad():
            expected = mode.scores(on_cpu.model, sample["image"][None])[0]
            got = mode.scores(on_device.model, sample["image"][None].to(TARGET))[0].cpu()
        labels = torch.as_tensor(sample["label"]).long()
        labelled = labels != on_cpu.ignore_index
        cpu_class, device_class = expected.argmax(0), got.argmax(0)
        cells = (labels[labelled] * classes + cpu_class[labelled]).numpy()
        expected_confusion += np.bincount(cells, minlength=classes**2).reshape(classes, classes)
        differ = labelled & (cpu_class != device_class)
        margin = expected.gather(0, cpu_class[None]) - expected.gather(0, device_class[None])
        tie = (margin <= 2 * (got - expected).abs().amax(0, keepdim=True))[0]
        ties += (differ & tie).sum().item()
        others += (differ & ~tie).sum().item()
    moved = int(np.abs(confusion - expected_confusion).sum()) // 2
    matrices = "equal" if moved == 0 else f"differ in {moved} pixels"
    record(
        f"{described}confusion matrices {matrices} over {int(expected_confusion.sum())} scored "
        f"pixels; predicted differently: {ties} pixel(s) by a tie, {others} by more",
        moved=moved,
        ties=ties,
        others=others,
    )
    assert others == 0
    assert moved <= ties


def test_evaluation_gives_the_cpu_confusion_matrix(trained: Path):
    on_device = parsenet.evaluate(trained, data={"num_workers": 0}, device=str(TARGET))
    assert_cpu_confusion_but_ties(trained, InferenceMode("whole"), on_device.confusion, "")


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
    described = f"{shown}: mIoU {scores['mIoU']:.4f} on {TARGET}; "
    assert_cpu_confusion_but_ties(
        trained, inference, np.load(tmp_path / "confusion.npy"), described
    )


def test_predict_and_export(trained: Path, data_root: Path, tmp_path: Path):
    images = sorted((data_root / "synthetic").rglob("JPEGImages/*.jpg"))[:6]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for image in images:
        (inputs / image.name).symlink_to(image)
    labels = {}
    for device in (str(TARGET), "cpu"):
        run = tmp_path / f"predict_{device.replace(':', '_')}"
        run_module(
            "parsenet.cli.predict",
            f"checkpoint={trained}",
            f"inputs={inputs}",
            f"device={device}",
            f"hydra.run.dir={run}",
        )
        labels[device] = np.stack(
            [np.asarray(Image.open(run / "labels" / f"{path.stem}.png")) for path in images]
        )
    differing = (labels[str(TARGET)] != labels["cpu"]).mean()
    assert differing <= 1e-3
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
    with torch.no_grad():
        agreement = (scripted(images).argmax(1) == eager(images).argmax(1)).float().mean().item()
    providers = onnx_providers()
    record(
        f"predict on {TARGET} and CPU: {100 * differing:.3f} % of label pixels differ; export "
        f"parity (CPU) torchscript {100 * exported['torchscript']:.3f} %, onnx "
        f"{100 * exported['onnx']:.3f} %; TorchScript on {TARGET} agrees with eager on "
        f"{100 * agreement:.3f} %; onnxruntime providers: {', '.join(providers)}",
        torchscript_on_device=agreement,
    )
    assert agreement >= 0.999


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

"""The training engine: exact resume, snapshots, signals, kills mid-save, non-finite steps,
corrupt checkpoints, mixed precision, logs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_MODEL, TINY_SYNTHETIC, assert_one_line_error, compose_train, run_cli
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters

from parsenet.data.sampling import ResumableSampler
from parsenet.engine.runtime.checkpoint import load_checkpoint
from parsenet.engine.runtime.distributed import DistContext
from parsenet.engine.scoring.split import shard
from parsenet.engine.training.faults import TrainingDiverged
from parsenet.engine.training.trainer import Trainer
from parsenet.fileio import remove_stale_temporaries


def weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_from_a_snapshot_continues_exactly(tmp_path: Path, workers: int):
    """4 iterations == 2 iterations + resume + 2 (dropout, flips and shuffling all random)."""
    settings = [
        f"data.num_workers={workers}",
        "train.max_iters=4",
        "train.checkpoint_every=2",
        "train.keep_snapshots=5",
        "train.eval_every=0",
    ]
    Trainer(compose_train(tmp_path, *settings), tmp_path / "whole").run()
    snapshot = tmp_path / "whole" / "checkpoints" / "iter_000002.pt"
    assert load_checkpoint(snapshot)["iteration"] == 2
    resumed = compose_train(tmp_path, *settings, f"train.resume={snapshot}")
    Trainer(resumed, tmp_path / "resumed").run()
    assert_same_weights(
        weights(tmp_path / "whole" / "checkpoints" / "last.pt"),
        weights(tmp_path / "resumed" / "checkpoints" / "last.pt"),
    )


def test_checkpoint_holds_the_whole_training_state(tmp_path: Path):
    Trainer(compose_train(tmp_path, "train.amp=fp16"), tmp_path / "run").run()
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "nonfinite", "config"):
        assert checkpoint[key], key
    assert len(checkpoint["rng"]) == 1 and set(checkpoint["rng"][0]) >= {"python", "numpy", "torch"}
    assert checkpoint["samples_seen"] == 3 * 2 and checkpoint["iteration"] == 3
    assert checkpoint["scaler"]["scale"] > 0  # fp16 keeps its loss scale
    assert {"parsenet", "torch", "python"} <= set(checkpoint["versions"])


def test_only_the_most_recent_snapshots_are_kept(tmp_path: Path):
    cfg = compose_train(
        tmp_path, "train.max_iters=6", "train.checkpoint_every=1", "train.keep_snapshots=2"
    )
    Trainer(cfg, tmp_path / "run").run()
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["best.pt", "iter_000005.pt", "iter_000006.pt", "last.pt"]


def test_sampler_resumes_mid_epoch_and_shards_the_same_order():
    whole = ResumableSampler(10, global_batch=4, seed=3)
    stream = iter(whole)
    first = [next(stream) for _ in range(12)]  # one epoch of 8, then 4 of the next
    assert sorted(i for i, _ in first[:8]) == sorted(int(i) for i in whole.permutation(0))
    later = iter(ResumableSampler(10, global_batch=4, seed=3, start=5))
    assert [next(later) for _ in range(7)] == first[5:12]
    ranks = [iter(ResumableSampler(10, 4, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    pairs = [(next(ranks[0]), next(ranks[1])) for _ in range(4)]
    assert [sample for pair in pairs for sample in pair] == first[:8]


def test_evaluation_shards_count_every_image_once():
    parts = [shard(list(range(5)), DistContext(rank=r, world_size=2)) for r in (0, 1)]
    assert [list(part.indices) for part in parts] == [[0, 2, 4], [1, 3]]


def test_a_non_finite_step_is_skipped_and_too_many_stop_training(tmp_path: Path):
    cfg = compose_train(tmp_path, "train.max_iters=6", "train.max_nonfinite=3")
    trainer = Trainer(cfg, tmp_path / "run")
    batches = iter(trainer.train_loader())
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    real_forward_loss = trainer.forward_loss
    trainer.forward_loss = lambda batch: real_forward_loss(batch) * float("nan")
    step = trainer.train_step(batches)
    assert step["loss"] != step["loss"] and trainer.guard.total == 1  # NaN, counted
    assert_same_weights(before, trainer.model.state_dict())
    trainer.forward_loss = real_forward_loss
    trainer.train_step(batches)
    assert trainer.guard.in_a_row == 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())

    cfg = compose_train(
        tmp_path, "train.max_iters=6", "train.max_nonfinite=3", "train.checkpoint_every=1"
    )
    stalled = Trainer(cfg, tmp_path / "stalled")
    stalled.forward_loss = lambda batch: torch.tensor(float("inf"), requires_grad=True)
    with pytest.raises(TrainingDiverged, match="3 steps in a row had a non-finite loss"):
        stalled.run()
    kept = load_checkpoint(tmp_path / "stalled" / "checkpoints" / "last.pt")
    assert kept["iteration"] == 2 and kept["nonfinite"]["in_a_row"] == 2


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_train_on_cpu(tmp_path: Path, amp: str):
    cfg = compose_train(tmp_path, f"train.amp={amp}", "train.channels_last=true")
    trainer = Trainer(cfg, tmp_path / "run")
    seen = []  # (autocast on, its dtype, input in channels-last) at every training forward

    def spy(module, args):
        if module.training:
            layout = args[0].is_contiguous(memory_format=torch.channels_last)
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), layout))

    trainer.model.register_forward_pre_hook(spy)
    assert 0 <= trainer.run()["mIoU"] <= 1
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert seen == [(True, dtype, True)] * 3
    kernels = [p for p in trainer.model.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    assert not all(p.is_contiguous() for p in kernels)  # 3×3 kernels really changed layout
    lines = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines if '"kind": "train"' in line]
    assert steps and all(torch.isfinite(torch.tensor(s["train/loss"])) for s in steps)


def test_jsonl_log_and_tensorboard_get_every_scalar(tmp_path: Path):
    Trainer(compose_train(tmp_path, "train.log_every=1"), tmp_path / "run").run()
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    assert records[0]["config"]["train"]["max_iters"] == 3
    train = [r for r in records if r.get("kind") == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3]
    expected = {
        "train/loss",
        "train/grad_norm",
        "train/step_seconds",
        "train/data_seconds",
        "train/images_per_s",
        "train/nonfinite_steps",
        "memory/peak_mb",
        "lr/base_weight",
        "lr/scale",
    }
    assert expected <= set(train[0])
    assert any(r.get("kind") == "val" and "val/mIoU" in r for r in records)
    insight = next(r for r in records if r.get("kind") == "insight")
    assert {"feature_norm/fc7", "feature_norm/pool6", "gamma/fc7", "gamma/pool6_1x1"} <= set(
        insight
    )
    assert insight["gamma/fc7"] == pytest.approx(10.0, abs=0.1)  # γ₀ = 10, barely trained
    assert 0 < insight["gamma_change/fc7"] < 0.1
    assert insight["feature_norm/pool6"] < insight["feature_norm/fc7"]
    assert any(key.startswith("val_iou/") for key in insight)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert "val/panels" in events.Tags()["images"]
    assert "gamma/fc7" in events.Tags()["scalars"]


def cli_overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [
        *TINY_MODEL,
        *TINY_SYNTHETIC,
        f"data.root={tmp_path / 'synthetic'}",
        "optim=adamw",
        "train.batch_size=2",
        "train.num_overlays=0",
        "train.eval_every=0",
        *extra,
    ]


def test_sigterm_saves_and_auto_resume_finishes_like_an_uninterrupted_run(tmp_path: Path):
    # A constant learning rate (schedule.power=0) makes the schedule independent of
    # train.max_iters: the stopped run is given far more iterations than it can reach before
    # the signal, and the resumed and the uninterrupted runs both end a few steps after it.
    overrides = cli_overrides(tmp_path, "schedule.power=0", "train.log_every=1")
    run, endless = tmp_path / "stopped", 100_000
    command = [sys.executable, "-m", "parsenet.cli.train", *overrides, f"train.max_iters={endless}"]
    process = subprocess.Popen(
        [*command, f"hydra.run.dir={run}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_first_step(process, run / "train_log.jsonl", timeout=300)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "stopped by SIGTERM" in stdout and "train.resume=auto" in stdout
    stopped_at = load_checkpoint(run / "checkpoints" / "last.pt")["iteration"]
    assert 0 < stopped_at < endless
    end = f"train.max_iters={stopped_at + 3}"
    resumed = run_cli(
        "parsenet-train", *overrides, end, "train.resume=auto", f"hydra.run.dir={run}"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == stopped_at + 3
    whole = tmp_path / "whole"
    run_cli("parsenet-train", *overrides, end, f"hydra.run.dir={whole}", check=True)
    assert_same_weights(
        weights(whole / "checkpoints" / "last.pt"), weights(run / "checkpoints" / "last.pt")
    )


def wait_for_first_step(process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Return once the training log has a step (the stop handler is installed by then)."""
    deadline = time.monotonic() + timeout
    while not (log.exists() and '"kind": "train"' in log.read_text()):
        if process.poll() is not None:
            pytest.fail(f"training exited ({process.returncode}) before its first step")
        if time.monotonic() > deadline:
            pytest.fail(f"no training step logged within {timeout} s")
        time.sleep(0.05)


SAVE_LOOP = """
import sys, torch
from parsenet.engine.runtime.checkpoint import save_checkpoint
path = sys.argv[1]
state = {"model": {"w": torch.randn(2_000_000)}, "config": {}, "dataset": {}, "iteration": 0}
i = 0
while True:
    i += 1
    state["iteration"] = i
    save_checkpoint(path, state)
    print(i, flush=True)
"""


def test_sigkill_during_saves_leaves_a_loadable_checkpoint(tmp_path: Path):
    path = tmp_path / "last.pt"
    for delay in (0.0, 0.013, 0.037):
        process = subprocess.Popen(
            [sys.executable, "-c", SAVE_LOOP, str(path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3):  # let it finish a few saves, then kill it at an arbitrary moment
            process.stdout.readline()
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert load_checkpoint(path)["iteration"] >= 3
    left = remove_stale_temporaries(tmp_path)  # what the trainer does at start
    assert all(p.name.startswith(".last.pt.tmp-") for p in left)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_corrupt_checkpoint_to_resume_is_one_line_and_nothing_is_overwritten(tmp_path: Path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    damaged = run / "checkpoints" / "last.pt"
    damaged.write_bytes(b"PK\x03\x04 truncated")
    result = run_cli(
        "parsenet-train", *cli_overrides(tmp_path), "train.resume=auto", f"hydra.run.dir={run}"
    )
    assert_one_line_error(result, f"checkpoint {damaged} cannot be read")
    assert damaged.read_bytes() == b"PK\x03\x04 truncated"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]


@pytest.mark.slow
def test_compiled_model_trains(tmp_path: Path):
    torch._dynamo.reset()
    trainer = Trainer(compose_train(tmp_path, "train.compile=true"), tmp_path / "run")
    compiled = trainer.forward_model
    assert isinstance(compiled, OptimizedModule) and compiled._orig_mod is trainer.model
    calls = []  # train_step goes through the compiled module, once per step
    compiled.register_forward_pre_hook(lambda module, args: calls.append(module.training))
    assert 0 <= trainer.run()["mIoU"] <= 1
    assert calls == [True] * 3
    assert counters["stats"]["unique_graphs"] >= 1  # Dynamo really captured the forward
    assert not any(
        k.startswith("_orig_mod") for k in weights(tmp_path / "run" / "checkpoints" / "last.pt")
    )

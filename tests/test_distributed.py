"""Training under torchrun: 2 gloo processes on the CPU."""

import subprocess
import sys
from pathlib import Path

import torch
from conftest import REPO, TINY_MODEL, TINY_SYNTHETIC, run_cli

from parsenet.engine.runtime.checkpoint import load_checkpoint

DETERMINISTIC = [
    *TINY_MODEL,
    *TINY_SYNTHETIC,
    "optim=adamw",
    "loss.reduction=sum",  # per-process sums average to the global batch's sum exactly
    "model.backbone.dropout=0",
    "model.head.context_dropout=0",
    "train.num_overlays=0",
    "train.eval_every=2",
    "train.max_iters=4",
    "train.checkpoint_every=2",
    "train.keep_snapshots=5",
]


def torchrun(*overrides: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "parsenet.cli.train",
        *overrides,
    ]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def final_weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path: Path):
    data = f"data.root={tmp_path / 'synthetic'}"
    one = tmp_path / "one"
    run_cli(
        "parsenet-train", *DETERMINISTIC, data, "train.batch_size=2", f"hydra.run.dir={one}",
        check=True,
    )  # fmt: skip
    two = tmp_path / "two"
    torchrun(*DETERMINISTIC, data, "train.batch_size=1", f"hydra.run.dir={two}")
    single, distributed = final_weights(one), final_weights(two)
    moved = load_checkpoint(one / "checkpoints" / "iter_000002.pt")["model"]
    assert any(not torch.equal(moved[k], single[k]) for k in single)
    for key in single:
        torch.testing.assert_close(distributed[key], single[key], rtol=1e-4, atol=1e-5)
    assert (two / "metrics.json").is_file()


def test_shared_run_folder_and_exact_resume_under_torchrun(tmp_path: Path):
    """Without hydra.run.dir every process would name its own folder; they share rank 0's.
    Resuming from a snapshot restores each process's random streams (dropout on)."""
    with_dropout = [
        *DETERMINISTIC,
        "model.backbone.dropout=0.5",
        "model.head.context_dropout=0.3",
        f"data.root={tmp_path / 'synthetic'}",
        "train.batch_size=1",
    ]
    torchrun(*with_dropout, cwd=tmp_path)
    runs = list((tmp_path / "runs" / "train").glob("*/*"))
    assert len(runs) == 1, runs
    assert (runs[0] / "metrics.json").is_file()
    assert (runs[0] / "train.log").read_text().count("val mIoU") == 2  # rank 0 only, iter 2 and 4
    resumed = tmp_path / "resumed"
    snapshot = runs[0] / "checkpoints" / "iter_000002.pt"
    assert len(load_checkpoint(snapshot)["rng"]) == 2
    torchrun(*with_dropout, f"train.resume={snapshot}", f"hydra.run.dir={resumed}")
    uninterrupted = final_weights(runs[0])
    for key, value in final_weights(resumed).items():
        assert torch.equal(value, uninterrupted[key]), key

"""Run folders: one process each (a lock), names that cannot collide, nothing left behind by a
failed command, one line for every mistake (settings, paths, the file system), Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    REPO,
    TINY_MODEL,
    TINY_SYNTHETIC,
    assert_one_line_error,
    run_cli,
    write_palette_png,
)

from parsenet.config import run_folder
from parsenet.engine.runtime.checkpoint import load_checkpoint
from parsenet.fileio import remove_stale_temporaries
from parsenet.run_lock import LOCK_NAME, RunFolderBusy, RunFolderLock


def tiny_train(tmp_path: Path, *extra: str) -> list[str]:
    return [
        *TINY_MODEL,
        *TINY_SYNTHETIC,
        "optim=adamw",
        f"paths.data_root={tmp_path / 'data'}",
        "train.batch_size=2",
        "train.num_overlays=0",
        *extra,
    ]


def default_ctrl_c() -> None:
    """In the child: Ctrl-C as in a terminal. A suite started in the background by a shell
    without job control inherits SIGINT ignored, and so would the command under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(module: str, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"parsenet.cli.{module}", *overrides],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        preexec_fn=default_ctrl_c,
    )


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    run_cli(
        "train",
        *tiny_train(root, "train.max_iters=2", "data.num_val=40"),
        f"hydra.run.dir={root / 'run'}",
        check=True,
    )
    return root


def test_a_second_run_in_a_busy_folder_stops_with_one_line(tmp_path: Path):
    run = tmp_path / "run"
    first = start("train", *tiny_train(tmp_path, "train.max_iters=100000"), f"hydra.run.dir={run}")
    try:
        wait_for(run / "train_log.jsonl", first)
        config = (run / ".hydra" / "config.yaml").read_text()
        second = run_cli("train", *tiny_train(tmp_path, "model=fcn"), f"hydra.run.dir={run}")
        assert_one_line_error(second, f"run folder {run} is in use by process {first.pid}")
        assert (run / ".hydra" / "config.yaml").read_text() == config
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 0 and not (run / LOCK_NAME).exists()


def test_a_stale_lock_is_taken_over_and_a_live_one_is_not(tmp_path: Path):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = {"pid": dead_pid(), "host": os.uname().nodename, "started": time.time()}
    (folder / LOCK_NAME).write_text(json.dumps(stale))
    with RunFolderLock(folder) as lock:
        assert lock.owner()["pid"] == os.getpid()
        with RunFolderLock(folder):  # the same process may enter again
            pass
    assert not (folder / LOCK_NAME).exists()
    live = subprocess.Popen(["sleep", "30"])
    try:
        (folder / LOCK_NAME).write_text(json.dumps({**stale, "pid": live.pid}))
        with pytest.raises(RunFolderBusy, match=f"in use by process {live.pid}"):
            RunFolderLock(folder).acquire()
    finally:
        live.kill()


def test_default_run_folders_of_commands_started_together_differ():
    names = {run_folder("eval", ["checkpoint=x.pt"])[0] for _ in range(5)}
    assert len(names) == 5


def test_only_temporaries_of_dead_processes_are_removed(tmp_path: Path):
    live = subprocess.Popen(["sleep", "30"])
    try:
        mine = tmp_path / f".last.pt.tmp-{os.getpid()}"
        others = tmp_path / f".last.pt.tmp-{live.pid}"
        left = tmp_path / f".best.pt.tmp-{dead_pid()}"
        for path in (mine, others, left):
            path.write_bytes(b"partial")
        staged = tmp_path / f".model.onnx.tmp-{dead_pid()}"  # a killed export's folder
        staged.mkdir()
        (staged / "model.onnx").write_bytes(b"partial")
        assert sorted(remove_stale_temporaries(tmp_path)) == sorted([mine, left, staged])
        assert [path.name for path in tmp_path.iterdir()] == [others.name]
    finally:
        live.kill()


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("optim.lr=-1", "optim.lr=-1 must be a number > 0"),
        ("optim.lr=abc", "optim.lr='abc' must be a number > 0"),
        ("seed=abc", "seed='abc' must be a whole number"),
        ("data.augment.crop_size=0", "data.augment.crop_size=0 must be a whole number ≥ 1"),
        ("data.augment.scale_range=[0.5]", "data.augment.scale_range=[0.5] must be two numbers"),
        ("data.root=/a,b", "type \"data.root='/a,b'\", or add -m"),
        ("data.root=/My Data (copy)", "type it as \"data.root='/My Data (copy)'\""),
    ],
)
def test_values_a_user_types_are_checked_before_anything_is_written(
    tmp_path: Path, override: str, fragment: str
):
    result = run_cli("train", *tiny_train(tmp_path), override, f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "r").exists()


def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_cli("train", *tiny_train(tmp_path), f"hydra.run.dir={blocker / 'run'}")
    assert_one_line_error(result, f"{blocker} is a file")
    result = run_cli("train", *tiny_train(tmp_path), f"hydra.run.dir={blocker}")
    assert_one_line_error(result, f"run folder {blocker} is a file")


FULL_DISK = """
import errno, sys, torch
real_save = torch.save
calls = []
def save(obj, handle, *args, **kwargs):
    calls.append(1)
    if len(calls) > 1:
        raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(obj, handle, *args, **kwargs)
torch.save = save
from parsenet.cli.train import main
sys.argv = ["parsenet-train", *sys.argv[1:]]
main()
"""


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(tmp_path: Path):
    run = tmp_path / "run"
    overrides = tiny_train(tmp_path, "train.max_iters=4", "train.checkpoint_every=1")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            FULL_DISK,
            *overrides,
            "train.keep_snapshots=0",
            f"hydra.run.dir={run}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    last = run / "checkpoints" / "last.pt"
    assert_one_line_error(result, f"cannot write {last}: No space left on device")
    assert load_checkpoint(last)["iteration"] == 1
    assert not list(run.rglob("*.tmp-*"))


def test_a_refused_resume_names_the_settings_and_keeps_the_run_config(trained: Path):
    run = trained / "run"
    config = (run / ".hydra" / "config.yaml").read_text()
    result = run_cli(
        "train",
        *tiny_train(trained, "train.max_iters=4", "data.num_val=40", "model.head.fusion=early"),
        "train.resume=auto",
        f"hydra.run.dir={run}",
    )
    assert_one_line_error(result, "model.head.fusion: late → early", "resume with the settings")
    assert (run / ".hydra" / "config.yaml").read_text() == config


def test_a_training_that_fails_at_its_first_batch_leaves_no_run_folder(
    voc_root: Path, tmp_path: Path
):
    base = voc_root / "VOCdevkit" / "VOC2012"
    for name in (base / "ImageSets" / "Segmentation" / "train.txt").read_text().split():
        write_palette_png(
            np.zeros((7, 9), dtype=np.uint8), base / "SegmentationClass" / f"{name}.png"
        )
    result = run_cli(
        "train",
        *TINY_MODEL,
        "data=voc",
        f"data.root={voc_root}",
        "data.num_workers=0",
        "train.batch_size=2",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    assert_one_line_error(result, "they must match")
    assert not (tmp_path / "r").exists()


def test_resuming_from_a_file_that_is_not_a_checkpoint_leaves_no_run_folder(tmp_path: Path):
    checkpoint = tmp_path / "last.pt"
    torch.save({"weights": torch.zeros(1)}, checkpoint)
    result = run_cli(
        "train",
        *tiny_train(tmp_path),
        f"train.resume={checkpoint}",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    assert_one_line_error(result, "not a parsenet checkpoint")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_ctrl_c_is_one_line_and_leaves_nothing_half_written(trained: Path, command: str):
    checkpoint = trained / "run" / "checkpoints" / "last.pt"
    out = trained / f"interrupted_{command}"
    inputs = next((trained / "data").rglob("JPEGImages"))
    slow = ["inference=slide", "inference.slide.crop=8", "inference.slide.stride=2"]  # many windows
    extra = ["data.num_workers=0"] if command == "eval" else [f"inputs={inputs}", "batch_size=1"]
    module = {"eval": "evaluate", "predict": "predict"}[command]
    process = start(module, f"checkpoint={checkpoint}", *extra, *slow, f"hydra.run.dir={out}")
    wait_for(out / ".hydra" / "config.yaml", process)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "error: interrupted" in stderr
    assert not out.exists()  # a new folder with nothing complete in it is removed

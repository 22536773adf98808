"""Hostile and careless input (issue 26): files that declare a huge size, and what must still
end in one line (or a counted skip) with nothing lost."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from conftest import (
    TINY_MODEL,
    TINY_SYNTHETIC,
    assert_one_line_error,
    compose_train,
    run_cli,
    write_voc_tree,
)
from PIL import Image
from test_caffe_convert import delimited, encode_layer, encode_net, key, varint

import parsenet
from parsenet.cli.common import parsed_overrides, sweep_jobs, typed_quoted
from parsenet.cli.evaluate import main as evaluate_main
from parsenet.cli.export import main as export_main
from parsenet.cli.predict import main as predict_main
from parsenet.cli.run_folder import RunFolder
from parsenet.cli.train import main as train_main
from parsenet.convert import CaffeModelError, read_caffemodel
from parsenet.data import dataset_info
from parsenet.data.base import MAX_PIXELS_VARIABLE, read_image, read_label
from parsenet.engine.runtime.checkpoint import load_checkpoint, save_checkpoint
from parsenet.engine.scoring.inference import InferenceMode
from parsenet.engine.training.faults import TrainingDiverged
from parsenet.engine.training.log import TrainingLog
from parsenet.engine.training.settings import TrainSettings
from parsenet.engine.training.trainer import Trainer
from parsenet.errors import CheckpointError, ConfigError, DataError
from parsenet.export import export_checkpoint
from parsenet.fileio import atomic_write
from parsenet.models import build_model
from parsenet.models.pretrained import choose_input_norm
from parsenet.prediction_files import find_inputs, predict_files


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def declared_png(path: Path, width: int, height: int) -> Path:
    """A PNG of a few dozen bytes whose header claims ``width``×``height`` RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(b"")), (b"IEND", b"")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(*chunk) for chunk in chunks))
    return path


def voc_sample(root: Path, split: str, index: int, kind: str) -> Path:
    """The image (``JPEGImages``) or label (``SegmentationClass``) file of a VOC tree's sample."""
    base = root / "VOCdevkit" / "VOC2012"
    if kind == "image":
        return base / "JPEGImages" / f"2007_{split}_{index:03d}.jpg"
    return base / "SegmentationClass" / f"2007_{split}_{index:03d}.png"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a tiny random model on the synthetic data (no training needed)."""
    work = tmp_path_factory.mktemp("hostile")
    cfg = compose_train(work)
    cfg["model"]["input_norm"] = choose_input_norm(cfg["model"]["input_norm"], None)
    info = dataset_info(cfg["data"])
    model = build_model(cfg["model"], info.num_classes)
    state = {"model": model.state_dict(), "config": cfg, "dataset": info.to_dict()}
    return save_checkpoint(work / "model.pt", {**state, "iteration": 0})


# --- 1. images that declare a huge size --------------------------------------------------------


def test_a_file_declaring_a_huge_size_is_refused_from_its_header(tmp_path: Path):
    bomb = declared_png(tmp_path / "bomb.png", 60000, 60000)
    assert bomb.stat().st_size < 100
    for read in (read_image, read_label):
        with pytest.raises(DataError, match=f"bomb.png is not read: .*{MAX_PIXELS_VARIABLE}"):
            read(bomb)


def test_the_pixel_bound_is_a_setting_checked_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(photo)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1199")
    with pytest.raises(DataError, match="declares 40×30 = 1200 pixels, over the limit of 1199"):
        read_image(photo)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1200")
    assert read_image(photo).shape == (30, 40, 3)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(ConfigError, match=f"{MAX_PIXELS_VARIABLE}='lots' must be a whole number"):
        read_image(photo)


def test_predict_skips_an_image_declaring_a_huge_size_and_goes_on(checkpoint: Path, tmp_path: Path):
    photos = tmp_path / "photos"
    declared_png(photos / "a_bomb.png", 60000, 60000)
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(photos / "b_photo.png")
    run = tmp_path / "run"
    result = run_cli(
        "predict",
        f"checkpoint={checkpoint}",
        f"inputs={photos}",
        "channels_last=false",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"skipped 1 unreadable file(s): {photos / 'a_bomb.png'}" in result.stdout
    assert "a_bomb.png is not read: it declares more than" in result.stdout
    assert (run / "labels" / "b_photo.png").is_file()


def test_verify_reports_files_declaring_a_huge_size(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "val": 2})
    image = voc_sample(root, "val", 0, "image")
    declared_png(image, 60000, 60000).rename(image)  # a PNG under a .jpg name, as found
    label = declared_png(voc_sample(root, "val", 1, "label"), 15000, 15000)
    result = run_cli("data", "verify", "voc", "--root", str(root))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "bad files: 2" in result.stdout
    assert f"image {image} is not read" in result.stdout
    assert f"label {label} is not read" in result.stdout


def voc_training(root: Path, run_dir: Path, *extra: str) -> Trainer:
    """A 2-iteration run of the tiny model on the VOC tree at ``root`` (``extra``: overrides)."""
    cfg = parsenet.compose(
        "train",
        [
            *TINY_MODEL,
            "data=voc",
            f"data.root={root}",
            "data.num_workers=0",
            "data.augment.crop_size=16",
            "optim=adamw",
            "train.max_iters=2",
            "train.batch_size=2",
            "train.num_overlays=0",
            "train.channels_last=false",
            *extra,
        ],
    )
    return Trainer(cfg, run_dir)


def test_a_validation_label_declaring_a_huge_size_ends_training_in_a_data_error_with_last_pt(
    tmp_path: Path,
):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "val": 2})
    declared_png(voc_sample(root, "val", 1, "label"), 60000, 60000)
    with pytest.raises(DataError, match="2007_val_001.png is not read"):
        voc_training(root, tmp_path / "run").run()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["iteration"] == 2


def test_a_run_killed_in_its_final_evaluation_has_last_pt_and_resumes_to_its_end(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "val": 1})
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    killed = voc_training(root, tmp_path / "run")
    on_disk: list[int] = []  # last.pt's iteration when the final evaluation starts

    def kill(*args: object) -> dict:
        on_disk.append(load_checkpoint(last)["iteration"] if last.is_file() else -1)
        raise KeyboardInterrupt  # a kill: not an error any handler is meant to catch

    killed.validation.run = kill
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert on_disk == [2]
    record = voc_training(root, tmp_path / "run", "train.resume=auto").run()
    assert record["num_images"] == 1
    assert load_checkpoint(last)["best_miou"] == record["mIoU"]  # best.pt's bar, for a later run
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


# --- 2. export settings checked before anything runs ------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("check_sizes", [[0, 0]]),
        ("check_sizes", [[-1, 5]]),
        ("check_sizes", []),
        ("check_sizes", [[45.5, 61]]),
        ("min_agreement", 1.5),
        ("min_agreement", float("nan")),
    ],
)
def test_an_unusable_parity_setting_is_refused_before_the_checkpoint_is_read(
    tmp_path: Path, setting: str, value: object
):
    settings = {"check_sizes": [[45, 61]], "min_agreement": 0.999, setting: value}
    out = tmp_path / "model.pt"
    with pytest.raises(ConfigError, match=f"^{setting}="):
        export_checkpoint(
            tmp_path / "missing.pt", "torchscript", out, tmp_path / "e.json", **settings
        )
    assert not out.exists()


def test_export_with_an_empty_check_size_is_one_line_and_keeps_the_old_file(
    checkpoint: Path, tmp_path: Path
):
    out = tmp_path / "model.pt"
    out.write_bytes(b"the user's earlier export")
    run = tmp_path / "run"
    result = run_cli(
        "export",
        f"checkpoint={checkpoint}",
        f"out={out}",
        "check_sizes=[[0,0]]",
        f"hydra.run.dir={run}",
    )
    assert_one_line_error(result, "check_sizes=[[0, 0]] must be a list of [height, width] pairs")
    assert out.read_bytes() == b"the user's earlier export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]


# --- 3. a crafted .caffemodel ------------------------------------------------------------------


def caffemodel(path: Path, blobs: list[bytes], layers: int = 1) -> Path:
    """A NetParameter of ``layers`` layers named 0, 1, … holding ``blobs`` each."""
    path.write_bytes(encode_net([encode_layer(str(index), blobs) for index in range(layers)]))
    return path


def shape_blob(dims: list[int], values: bytes = b"") -> bytes:
    """A BlobProto of the given ``shape`` dims and packed float ``values``."""
    return delimited(7, delimited(1, b"".join(varint(dim) for dim in dims))) + values


@pytest.mark.parametrize(
    "dims",
    [[2**32, 2**32], [2**64], [0, 2**63], [3, *[2**32 + 1, 2**32 - 1] * 2]],
    ids=["wraps_to_zero", "above_2_63", "beside_a_zero", "wraps_to_the_count"],
)
def test_a_blob_shape_no_array_can_have_is_a_damaged_file(tmp_path: Path, dims: list[int]):
    values = delimited(5, np.zeros(3, "<f4").tobytes()) if dims[0] == 3 else b""
    path = caffemodel(tmp_path / "crafted.caffemodel", [shape_blob(dims, values)])
    with pytest.raises(CaffeModelError, match="crafted.caffemodel is not a complete .* shape"):
        read_caffemodel(path)


def test_convert_of_a_crafted_shape_is_one_line(tmp_path: Path):
    path = caffemodel(tmp_path / "crafted.caffemodel", [shape_blob([2**32, 2**32])])
    result = run_cli("convert", "caffe", str(path), "--out", str(tmp_path / "out.pt"))
    assert_one_line_error(result, "crafted.caffemodel", "a blob of shape (4294967296, 4294967296)")
    assert not (tmp_path / "out.pt").exists()


def parse_seconds(path: Path) -> float:
    """The fastest of three reads of ``path`` (its errors ignored)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        with contextlib.suppress(CaffeModelError):
            read_caffemodel(path)
        times.append(time.perf_counter() - started)
    return min(times)


def test_reading_many_layers_is_linear_in_their_number(tmp_path: Path):
    one_value = delimited(5, np.zeros(1, "<f4").tobytes()) + delimited(7, delimited(1, varint(1)))
    small, large = (
        parse_seconds(caffemodel(tmp_path / f"{count}.caffemodel", [one_value], layers=count))
        for count in (2_000, 16_000)
    )
    assert large < 20 * small, (small, large)  # linear: about 8 times; quadratic: 64


def test_many_short_runs_of_unpacked_values_are_read_in_linear_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    short_run = key(5, 5) + bytes(4) + key(1, 0) + varint(1)  # one unpacked float, then a dim
    looked: list[int] = []  # bytes the reader hands to NumPy
    frombuffer = np.frombuffer

    def counted(*args: object, **kwargs: object) -> np.ndarray:
        array = frombuffer(*args, **kwargs)
        looked.append(array.nbytes)
        return array

    monkeypatch.setattr(np, "frombuffer", counted)
    work = []
    for count in (1_000, 8_000):
        looked.clear()
        with contextlib.suppress(CaffeModelError):  # a blob of 1×N values, shaped 1
            read_caffemodel(caffemodel(tmp_path / f"{count}.caffemodel", [short_run * count]))
        work.append(sum(looked))
    assert work[1] < 10 * work[0], work  # linear: 8 times; quadratic: 64


# --- 4. NaN, infinity and out-of-range numbers -------------------------------------------------


def tiny_training(run: Path, *extra: str) -> list[str]:
    """``parsenet-train`` arguments for a 3-iteration run of the tiny model into ``run``."""
    return [
        *TINY_MODEL,
        *TINY_SYNTHETIC,
        f"paths.data_root={run.parent / 'data'}",
        "train.batch_size=2",
        "train.max_iters=3",
        "train.num_overlays=0",
        "train.channels_last=false",
        f"hydra.run.dir={run}",
        *extra,
    ]


def test_a_nan_learning_rate_is_one_line_before_training(tmp_path: Path):
    run = tmp_path / "run"
    result = run_cli("train", *tiny_training(run, "optim.lr=nan"))
    assert_one_line_error(result, "optim.lr=nan must be a finite number")
    assert not run.exists()


@pytest.mark.parametrize(
    ("command", "overrides"),
    [
        ("train", ["optim.lr=inf"]),
        ("train", ["data.augment.scale_range=[nan,1.0]"]),
        (
            "predict",
            ["checkpoint=m.pt", "inputs=x", "inference=msflip", "inference.msflip.scales=[nan]"],
        ),
        ("export", ["checkpoint=m.pt", "min_agreement=-inf"]),
    ],
)
def test_no_command_takes_nan_or_infinity_for_a_setting(command: str, overrides: list[str]):
    key = overrides[-1].partition("=")[0]
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(key)}(\[0\])?=-?(nan|inf) must be a finite number"
    ):
        parsenet.compose(command, overrides)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.lr=nan", "optim.lr=nan must be a number > 0"),
        ("optim.lr=inf", "optim.lr=inf must be a number > 0"),
        ("optim.weight_decay=inf", "optim.weight_decay=inf must be a number ≥ 0"),
        ("data.augment.scale_range=[nan,1.0]", "scale_range=nan must be a number > 0"),
        ("+optim.momentum=2", "optim.momentum=2 must be a number in [0, 1)"),
        ("+optim.betas=[2,0.9]", "optim.betas[0]=2 must be a number in [0, 1)"),
    ],
)
def test_the_training_settings_refuse_non_finite_and_out_of_range_numbers_themselves(
    tmp_path: Path, override: str, fragment: str
):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        TrainSettings.from_config(compose_train(tmp_path, override))


@pytest.mark.parametrize(
    ("command", "overrides", "line"),
    [
        (train_main, ["optim=sgd", "optim.momentum=0.9,2"], "optim.momentum=2 must be a number in"),
        (predict_main, ["checkpoint=m.pt", "inputs=x", "alpha=0.5,1.5"], "alpha=1.5 must be"),
        (
            evaluate_main,
            ["checkpoint=m.pt", "inference=slide", "inference.slide.stride=1,0"],
            "inference.slide.stride=0 must be in",
        ),
        (export_main, ["checkpoint=m.pt", "min_agreement=0.99,nan"], "min_agreement=nan must be"),
    ],
    ids=["train", "predict", "eval", "export"],
)
def test_a_multirun_checks_every_job_before_the_first_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: Callable[[], None],
    overrides: list[str],
    line: str,
):
    def start(*args: object, **kwargs: object) -> None:
        raise AssertionError("a job was started")

    monkeypatch.setattr(hydra, "main", start)
    sweep = tmp_path / "sweep"
    monkeypatch.setattr(sys, "argv", ["parsenet", "-m", *overrides, f"hydra.sweep.dir={sweep}"])
    with pytest.raises(SystemExit) as exit_status:
        command()
    assert exit_status.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {line}") and "\n" not in error, error
    key, _, values = overrides[-1].partition("=")
    assert error.endswith(f"(multirun job 2 of 2: {key}={values.split(',')[-1]})"), error
    assert not sweep.exists()


def test_a_sweep_the_basic_sweeper_cannot_list_is_one_line():
    with pytest.raises(ConfigError, match=r"^optim.lr=interval\(0,1\): a multirun takes lists"):
        sweep_jobs(["optim.lr=interval(0,1)"])


def test_msflip_scales_must_be_finite_and_positive():
    node = {"mode": "msflip", "slide": {"crop": 512, "stride": 341}, "msflip": {"flip": True}}
    for scales in ([float("nan")], [float("inf")], [0.5, -1.0], [], 2.0):
        with pytest.raises(
            ConfigError, match="inference.msflip.scales=.* must be finite numbers > 0"
        ):
            InferenceMode.from_config({**node, "msflip": {"scales": scales, "flip": True}})


def test_an_update_that_makes_the_weights_non_finite_stops_training_and_saves_nothing(
    tmp_path: Path,
):
    trainer = Trainer(compose_train(tmp_path, "train.checkpoint_every=1"), tmp_path / "run")
    update = trainer.optimizer.step

    def overflowing(*args: object, **kwargs: object) -> object:
        """The update, then one weight where a too large step would put it."""
        result = update(*args, **kwargs)
        weight = next(trainer.model.parameters()).data
        weight[(0,) * weight.dim()] = float("inf")
        return result

    trainer.optimizer.step = overflowing
    with pytest.raises(TrainingDiverged, match=r"iteration 1: .* non-finite with optim.lr=0.0003"):
        trainer.run()
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))


# --- 5. what parsenet.predict takes --------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(checkpoint: Path) -> parsenet.InferenceModel:
    """The tiny random model on the CPU."""
    return parsenet.load_for_inference(checkpoint, "cpu", channels_last=False)


def test_another_dtype_with_its_value_range_reaches_the_model_as_its_uint8_image(
    loaded: parsenet.InferenceModel,
):
    inputs: list[torch.Tensor] = []  # what the network is given

    def network(batch: torch.Tensor) -> torch.Tensor:
        inputs.append(batch)
        return loaded.model(batch)

    spied = dataclasses.replace(loaded, model=network)
    image = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    expected = parsenet.predict(spied, image)
    for given, value_range in [
        ((image / 255).astype(np.float32), (0, 1)),  # scikit-image, torchvision
        (image / 255, [0.0, 1.0]),
        (image.astype(np.float32), (0, 255)),
        (image.astype(np.uint16) * 257, (0, np.uint16(65535))),  # 16 bits
        (image.astype(np.float64) - 128, (-128, 127)),
    ]:
        labels = parsenet.predict(spied, given, value_range=value_range)
        np.testing.assert_array_equal(labels, expected)
    assert all(torch.equal(given, inputs[0]) for given in inputs[1:])


RGB = np.zeros((24, 32, 3), np.uint8)
NEEDS_RANGE = "image needs its range: pass value_range=(0, 1) for floats in [0, 1]"


@pytest.mark.parametrize(
    ("image", "value_range", "fragment"),
    [
        ((RGB / 255).astype(np.float32), None, f"a float32 {NEEDS_RANGE}"),
        (RGB.astype(np.uint16), None, f"a uint16 {NEEDS_RANGE}"),
        (RGB + 1.5, (0, 1), "in that range; this one holds 1.5…1.5"),
        (np.full((24, 32, 3), np.nan, np.float32), (0, 1), "this one holds NaN or infinity"),
        (RGB.astype(bool), (0, 1), "image dtype bool is not taken: pass uint8 RGB, or integers"),
        (RGB[..., 0], None, "(24×32) is greyscale; repeat it into RGB"),
        (RGB[..., :1], None, "(24×32×1) is greyscale"),
        (np.zeros((24, 32, 4), np.uint8), None, "(24×32×4) is RGBA; drop the alpha channel"),
        (RGB.transpose(2, 0, 1), None, "(3×24×32) is channels-first (C×H×W); move the channels"),
        (np.zeros((0, 0, 3), np.uint8), None, "(0×0×3) is empty"),
    ],
    ids=["float", "uint16", "outside", "all_nan", "bool", "grey", "grey_1", "rgba", "chw", "empty"],
)
def test_an_image_predict_does_not_take_is_one_data_error_saying_how_to_convert_it(
    loaded: parsenet.InferenceModel, image: np.ndarray, value_range: object, fragment: str
):
    with pytest.raises(DataError, match=re.escape(fragment)) as caught:
        parsenet.predict(loaded, image, value_range=value_range)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value_range", [(1, 0), (0, float("inf")), (0,), "0-1", (False, True)])
def test_a_value_range_that_is_not_two_increasing_numbers_is_one_config_error(
    loaded: parsenet.InferenceModel, value_range: object
):
    with pytest.raises(ConfigError, match="must be two finite numbers, low below high"):
        parsenet.predict(loaded, RGB.astype(np.float32), value_range=value_range)


# --- the minor ones ------------------------------------------------------------------------------


class Planted:
    """An object whose unpickling would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_calling_a_blocked_function_is_refused_naming_it(tmp_path: Path):
    planted = tmp_path / "planted.pt"
    torch.save({"model": Planted(tmp_path / "ran")}, planted)
    with pytest.raises(CheckpointError, match=r"holds a pickled (posix|nt)\.system, not") as caught:
        load_checkpoint(planted)
    assert "weights_only" not in str(caught.value) and not (tmp_path / "ran").exists()


def test_a_pickle_the_safe_loader_cannot_read_is_refused_with_its_reason_only(tmp_path: Path):
    odd = tmp_path / "odd.pt"
    odd.write_bytes(b"\x80\x04(I1\nI2\nd.")  # a dict built by an opcode the safe loader lacks
    with pytest.raises(CheckpointError, match=r"not a torch checkpoint: Unsupported operand 73\)$"):
        load_checkpoint(odd)


def photo(path: Path, seed: int = 0) -> Path:
    """A small random RGB picture at ``path`` (its format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_a_folder_input_takes_gifs_and_names_the_files_it_leaves_out(
    loaded: parsenet.InferenceModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    photos = tmp_path / "photos"
    photo(photos / "a.gif")
    (photos / "notes.txt").write_text("not a picture")
    report = predict_files(loaded, photos, tmp_path / "out")
    assert report.written == [photos / "a.gif"]
    assert (tmp_path / "out" / "labels" / "a.png").is_file()
    assert f"inputs={photos}: left out 1 file(s) not named like an image" in caplog.text
    assert ": notes.txt;" in caplog.text


@contextlib.contextmanager
def released_after(fifo: Path, seconds: float) -> Iterator[None]:
    """Every reader still waiting on ``fifo`` after ``seconds`` is let go (a writer opens it and
    leaves at once), so a read that should never start cannot hang the test."""
    done = threading.Event()

    def release() -> None:
        done.wait(seconds)
        while not done.is_set():
            with contextlib.suppress(OSError):  # no reader waiting
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            done.wait(0.1)

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        yield
    finally:
        done.set()
        releaser.join()


def test_a_fifo_named_like_an_image_is_an_unreadable_file_not_a_wait(
    loaded: parsenet.InferenceModel, tmp_path: Path
):
    photos = tmp_path / "photos"
    photo(photos / "b.png")
    fifo = photos / "a.png"
    os.mkfifo(fifo)
    started = time.monotonic()
    with released_after(fifo, 5):
        report = predict_files(loaded, photos, tmp_path / "out")
        with pytest.raises(DataError, match="a.png: it is not a regular file"):
            read_label(fifo)
    with pytest.raises(DataError, match="photos: it is a folder"):
        read_image(photos)
    assert time.monotonic() - started < 5, "the FIFO was opened and waited on"
    assert report.skipped == [str(fifo)] and report.written == [photos / "b.png"]


def test_a_recursive_glob_leaves_out_earlier_run_folders_and_takes_each_file_once(
    loaded: parsenet.InferenceModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    photos = tmp_path / "photos"
    photo(photos / "a.png")
    (photos / "deeper").mkdir()
    (photos / "deeper" / "loop").symlink_to(photos)  # photos/deeper/loop/deeper/loop/…
    earlier = photos / "runs" / "first"
    (earlier / ".hydra").mkdir(parents=True)  # as every command's run folder
    predict_files(loaded, photos / "a.png", earlier)
    assert find_inputs(photos / "**" / "*.png") == [photos / "a.png"]
    assert "left out 3 file(s) inside earlier run folders (with .hydra/)" in caplog.text
    named = find_inputs(earlier / "labels" / "*.png")  # a run folder named in inputs= itself
    assert named == [earlier / "labels" / "a.png"]


class FullDisk:
    """A file handle on a full disk: writing fails as torch.save and Pillow see it."""

    def write(self, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing to close."""


def test_a_full_disk_names_the_file_being_written(tmp_path: Path):
    out = tmp_path / "metrics.json"
    out.write_text("the earlier file")
    with pytest.raises(OSError, match="No space left") as caught:
        atomic_write(out, lambda handle: FullDisk().write(b"{}"))
    assert caught.value.filename == str(out) and out.read_text() == "the earlier file"
    assert sorted(tmp_path.iterdir()) == [out]
    log = TrainingLog(tmp_path / "run")
    log.scalars(1, {"loss": 1.0})
    log._lines.close()
    log._lines = FullDisk()
    with pytest.raises(OSError, match="No space left") as caught:
        log.scalars(2, {"loss": 0.5})
    assert caught.value.filename == str(tmp_path / "run" / "train_log.jsonl")
    log.close()


def test_resuming_onto_another_training_set_is_one_line_and_a_moved_copy_resumes(
    tmp_path: Path,
):
    root = write_voc_tree(tmp_path / "voc", {"train": 2, "val": 1})
    voc_training(root, tmp_path / "run").save("last.pt")
    shutil.copytree(root, tmp_path / "moved")
    assert voc_training(tmp_path / "moved", tmp_path / "run", "train.resume=auto").iteration == 0
    other = write_voc_tree(tmp_path / "other", {"train": 3, "val": 1})
    with pytest.raises(CheckpointError, match="another training set") as caught:
        voc_training(other, tmp_path / "run", "train.resume=auto")
    assert "(voc train, 2 images; this run: voc train, 3 images)" in str(caught.value)


def test_a_planted_log_link_in_a_run_folder_is_one_line_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    def start(*args: object, **kwargs: object) -> None:
        raise AssertionError("Hydra was started")

    monkeypatch.setattr(hydra, "main", start)
    target = tmp_path / "someone_elses.txt"
    target.write_text("theirs")
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.log").symlink_to(target)
    monkeypatch.setattr(sys, "argv", ["parsenet-eval", "checkpoint=m.pt", f"hydra.run.dir={run}"])
    with pytest.raises(SystemExit) as exit_status:
        evaluate_main()
    assert exit_status.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"error: {run / 'eval.log'} is a symbolic link (to {target}), which the run would write "
        "through; remove it or choose another folder (hydra.run.dir=PATH)"
    )
    assert target.read_text() == "theirs" and [p.name for p in run.iterdir()] == ["eval.log"]


@pytest.mark.parametrize("earlier_log", ["", "an earlier run's line\n"])
def test_a_failed_run_in_an_existing_folder_takes_back_its_log(tmp_path: Path, earlier_log: str):
    folder = tmp_path / "my_files"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's")
    if earlier_log:
        (folder / "train.log").write_text(earlier_log)
    before = {path.name: path.read_text() for path in folder.iterdir()}
    run = RunFolder(folder, "train.log").open()
    (folder / ".hydra").mkdir()  # what Hydra writes as the run starts
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    with open(folder / "train.log", "a") as log:
        log.write("[INFO] the failed run's lines\n")
    run.failed()
    run.close()
    assert {path.name: path.read_text() for path in folder.iterdir()} == before


@pytest.mark.parametrize(
    "value",
    ["/data/it's (1)", "/My Data (copy)", 'say "hi" $HOME `x` !', "C:\\dir (x)\\", "a\\'b (2)"],
    ids=["apostrophe", "parentheses", "shell_characters", "backslashes", "escaped_quote"],
)
def test_the_quoting_advice_typed_in_a_shell_gives_hydra_the_value(value: str):
    override = f"data.root={value}"
    with pytest.raises(ConfigError, match="^cannot read the override") as caught:
        parsed_overrides([override])
    advice = typed_quoted(override)
    assert f"type it as {advice} (" in str(caught.value)
    shell = subprocess.run(["sh", "-c", f"printf %s {advice}"], capture_output=True, text=True)
    assert parsed_overrides([shell.stdout])[0].value() == value

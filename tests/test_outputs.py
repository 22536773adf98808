"""What the commands write, and refuse to: prediction file names that never collide, settings
and output paths checked before anything is written, an export that is one file a user can copy
(or keeps what was there), no score from zero images, a foreign pickle as one plain line, and no
half-written prediction after Ctrl-C."""

import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, assert_one_line_error, run_cli, write_voc_tree
from PIL import Image

import parsenet
from parsenet import export, onnx_backend
from parsenet.errors import ConfigError, DataError, ParsenetError
from parsenet.export import export_checkpoint, load_runner
from parsenet.prediction_files import check_settings, output_names, predict_files


def voc_training(root: Path, *extra: str) -> dict:
    """A 2-iteration training config of the tiny model on the VOC tree at ``root``."""
    return parsenet.compose(
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
            *extra,
        ],
    )


def corrupt_val_images(root: Path) -> int:
    """Overwrite every val JPEG of a VOC tree with bytes no decoder reads; returns how many."""
    base = root / "VOCdevkit" / "VOC2012"
    ids = (base / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    for sample_id in ids:
        (base / "JPEGImages" / f"{sample_id}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return len(ids)


def save_image(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A random RGB picture of ``height``×``width`` at ``path`` (format from the suffix)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for 2 iterations on a 4 + 3 image VOC tree."""
    work = tmp_path_factory.mktemp("outputs")
    root = write_voc_tree(work / "voc", {"train": 4, "val": 3})
    parsenet.train(voc_training(root), work / "run")
    return work / "run" / "checkpoints" / "last.pt"


# --- prediction file names ---------------------------------------------------------------------


def test_output_names_keep_sub_folders_under_the_common_root(tmp_path: Path):
    inputs = [tmp_path / "a" / "same.jpg", tmp_path / "b" / "same.jpg", tmp_path / "b" / "c.png"]
    assert output_names(inputs) == {
        inputs[0]: Path("a/same.png"),
        inputs[1]: Path("b/same.png"),
        inputs[2]: Path("b/c.png"),
    }
    assert output_names([tmp_path / "one.jpeg"]) == {tmp_path / "one.jpeg": Path("one.png")}


def test_output_names_keep_the_suffix_only_where_names_would_clash(tmp_path: Path):
    inputs = [tmp_path / name for name in ("x.jpg", "x.png", "y.jpg", "z.JPG", "z.jpg")]
    names = output_names(inputs)
    assert [str(names[path]) for path in inputs] == [
        "x.jpg.png",
        "x.png.png",
        "y.png",
        "z.JPG.png",
        "z.jpg.png",
    ]
    tricky = [tmp_path / name for name in ("x.jpg", "x.png", "x.jpg.png", "x")]
    assert len(set(output_names(tricky).values())) == len(tricky)


def test_output_names_of_relative_glob_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    inputs = [Path("photos/2024/a.jpg"), Path("photos/2025/a.jpg")]
    assert sorted(map(str, output_names(inputs).values())) == ["2024/a.png", "2025/a.png"]


def test_predict_never_overwrites_its_own_outputs(checkpoint: Path, tmp_path: Path):
    inputs = tmp_path / "inputs"
    sizes = {
        "a/same.jpg": (30, 40),
        "b/same.jpg": (17, 61),
        "a/x.jpg": (20, 20),
        "a/x.png": (22, 26),
    }
    for seed, (name, (height, width)) in enumerate(sizes.items()):
        save_image(inputs / name, height, width, seed)
    out = tmp_path / "predicted"
    result = run_cli(
        "parsenet-predict",
        f"checkpoint={checkpoint}",
        f"inputs={inputs}/*/*",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "predicted 4 image(s)" in result.stdout
    expected = {"a/same.png", "b/same.png", "a/x.jpg.png", "a/x.png.png"}
    for folder in ("labels", "overlays", "side_by_side"):
        written = {str(p.relative_to(out / folder)) for p in (out / folder).rglob("*.png")}
        assert written == expected, folder
    for name, (height, width) in sizes.items():
        label = Path(name).with_suffix(".png") if name.endswith("same.jpg") else f"{name}.png"
        with Image.open(out / "labels" / label) as png:
            assert png.size == (width, height), name  # each input's own prediction


# --- settings and output paths checked before anything is written ------------------------------


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_batch_size_below_one_is_refused(batch_size):
    with pytest.raises(ConfigError, match="batch_size="):
        check_settings(batch_size, 0.5)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "half"])
def test_alpha_outside_zero_to_one_is_refused(alpha):
    with pytest.raises(ConfigError, match="alpha="):
        check_settings(4, alpha)


def test_predict_files_checks_settings_before_writing(tmp_path: Path):
    save_image(tmp_path / "in" / "a.jpg", 8, 8)
    with pytest.raises(ConfigError, match="alpha=2"):
        predict_files(None, tmp_path / "in", tmp_path / "out", alpha=2)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setting", "fragment"), [("batch_size=0", "batch_size=0"), ("alpha=1.5", "alpha=1.5")]
)
def test_bad_predict_settings_are_one_line_and_write_nothing(
    checkpoint: Path, tmp_path: Path, setting: str, fragment: str
):
    save_image(tmp_path / "in" / "a.jpg", 8, 8)
    out = tmp_path / "run"
    result = run_cli(
        "parsenet-predict",
        f"checkpoint={checkpoint}",
        f"inputs={tmp_path / 'in'}",
        setting,
        f"hydra.run.dir={out}",
    )
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_export_to_a_folder_or_an_unwritable_place_is_one_line(checkpoint: Path, tmp_path: Path):
    folder = tmp_path / "exports"
    folder.mkdir()
    result = run_cli(
        "parsenet-export",
        f"checkpoint={checkpoint}",
        f"out={folder}",
        f"hydra.run.dir={tmp_path / 'r1'}",
    )
    assert_one_line_error(result, f"out={folder} is a folder; give a file path")
    assert list(folder.iterdir()) == [] and not (tmp_path / "r1").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli(
        "parsenet-export",
        f"checkpoint={checkpoint}",
        f"out={blocker / 'sub' / 'model.pt'}",
        f"hydra.run.dir={tmp_path / 'r2'}",
    )
    assert_one_line_error(result, "its folder cannot be created", f"{blocker} is a file")
    assert blocker.read_text() == "not a folder" and not (tmp_path / "r2").exists()


# --- an export is the file a user copies -------------------------------------------------------

CHECK_SIZES = [[45, 61]]  # the parity check's one image size in these tests


def needs_onnx() -> None:
    """Skip unless the ONNX exporter and runtime are installed."""
    for package in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(package)


def names_in(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden ones included."""
    return sorted(path.name for path in folder.iterdir())


def external_files(path: Path) -> set[str]:
    """The weight files an ONNX file names (empty when its weights are inside it)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    entries = (entry for tensor in model.graph.initializer for entry in tensor.external_data)
    return {entry.value for entry in entries if entry.key == "location"}


def assert_same_labels(checkpoint: Path, run: Callable[[torch.Tensor], np.ndarray]) -> None:
    """``run`` (an exported file's runner) labels a random image as the eager model does."""
    images = torch.randn(1, 3, 37, 53, generator=torch.Generator().manual_seed(1))
    eager = parsenet.load_for_inference(checkpoint, "cpu", channels_last=False).model
    with torch.no_grad():
        expected = eager(images).argmax(1).numpy()
    np.testing.assert_array_equal(run(images).argmax(1), expected)


def test_an_onnx_export_is_one_file_that_loads_anywhere(checkpoint: Path, tmp_path: Path):
    needs_onnx()
    out = tmp_path / "exports" / "fp32.onnx"
    result = run_cli(
        "parsenet-export",
        f"checkpoint={checkpoint}",
        "format=onnx",
        f"out={out}",
        "check_sizes=[[45,61]]",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert names_in(out.parent) == ["fp32.onnx"] and external_files(out) == set()
    served = tmp_path / "server" / "model.onnx"
    served.parent.mkdir()
    shutil.copy(out, served)
    assert_same_labels(checkpoint, load_runner("onnx", served))
    for _ in range(2):
        export_checkpoint(checkpoint, "onnx", out, tmp_path / "again.json", CHECK_SIZES)
    assert names_in(out.parent) == ["fp32.onnx"]


def test_an_onnx_export_over_the_limit_keeps_a_sidecar_named_after_it(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    needs_onnx()
    out = tmp_path / "exports" / "fp32.onnx"
    monkeypatch.setattr(onnx_backend, "SINGLE_FILE_LIMIT", 0)  # every model is "too large"
    export_checkpoint(checkpoint, "onnx", out, tmp_path / "export.json", CHECK_SIZES)
    assert names_in(out.parent) == ["fp32.onnx", "fp32.onnx.data"]
    assert external_files(out) == {"fp32.onnx.data"}
    served = tmp_path / "server"
    shutil.copytree(out.parent, served)
    assert_same_labels(checkpoint, load_runner("onnx", served / "fp32.onnx"))
    monkeypatch.undo()
    export_checkpoint(checkpoint, "onnx", out, tmp_path / "export.json", CHECK_SIZES)
    assert names_in(out.parent) == ["fp32.onnx"] and external_files(out) == set()


def test_the_cached_onnx_export_is_one_file(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    needs_onnx()
    monkeypatch.setenv("PARSENET_CACHE", str(tmp_path / "cache"))
    cached = parsenet.load_for_inference(checkpoint, backend="onnxruntime").model.path
    assert names_in(tmp_path / "cache" / "onnx") == [cached.name]
    assert external_files(cached) == set()


def test_a_torchscript_export_moved_elsewhere_still_loads(checkpoint: Path, tmp_path: Path):
    out = tmp_path / "exports" / "model.pt"
    for _ in range(2):
        export_checkpoint(checkpoint, "torchscript", out, tmp_path / "export.json", CHECK_SIZES)
    assert names_in(out.parent) == ["model.pt"]
    served = tmp_path / "server" / "model.pt"
    served.parent.mkdir()
    shutil.move(out, served)
    assert_same_labels(checkpoint, load_runner("torchscript", served))


def interrupt(*_: object) -> None:
    """A stand-in for the parity check that the user stops with Ctrl-C."""
    raise KeyboardInterrupt


def disagreeing(*_: object) -> list[dict]:
    """A stand-in for the parity check that finds the export wrong on half the pixels."""
    return [{"size": [45, 61], "max_abs_diff": 1.0, "argmax_agreement": 0.5}]


@pytest.mark.parametrize("stop", ["disagreement", "ctrl_c"])
def test_an_export_that_is_not_kept_leaves_what_was_at_out(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str
):
    out = tmp_path / "exports" / "model.pt"
    out.parent.mkdir()
    out.write_bytes(b"the user's earlier export")
    monkeypatch.setattr(export, "parity", interrupt if stop == "ctrl_c" else disagreeing)
    expected = KeyboardInterrupt if stop == "ctrl_c" else ParsenetError
    reason = None if stop == "ctrl_c" else "agrees with the eager model on only 50.000 %"
    record = tmp_path / "export.json"
    with pytest.raises(expected, match=reason):
        export_checkpoint(checkpoint, "torchscript", out, record, CHECK_SIZES)
    assert names_in(out.parent) == ["model.pt"]
    assert out.read_bytes() == b"the user's earlier export"
    assert not record.exists()


# --- no score from zero images -----------------------------------------------------------------


def test_eval_where_every_val_image_is_unreadable_is_an_error(checkpoint: Path, tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 1, "val": 3}, seed=1)
    count = corrupt_val_images(root)
    out = tmp_path / "eval"
    result = run_cli(
        "parsenet-eval",
        f"checkpoint={checkpoint}",
        f"data.root={root}",
        "data.on_bad_sample=skip",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
    )
    line = assert_one_line_error(
        result, f"split val: all {count} images were skipped", "bad_samples"
    )
    assert "mIoU" not in result.stdout and not (out / "metrics.json").exists()
    assert "2007_val_000.jpg" in line


def test_validation_during_training_with_no_readable_image_is_an_error(tmp_path: Path):
    root = write_voc_tree(tmp_path / "voc", {"train": 4, "val": 2})
    corrupt_val_images(root)
    cfg = voc_training(root, "data.on_bad_sample=skip")
    with pytest.raises(DataError, match="all 2 images were skipped as unreadable"):
        parsenet.train(cfg, tmp_path / "run")


# --- a file that is not a checkpoint -----------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_foreign_pickle_is_one_plain_line(tmp_path: Path, protocol: int):
    foreign = tmp_path / "foreign.pt"
    with open(foreign, "wb") as handle:
        pickle.dump(object(), handle, protocol=protocol)
    result = run_cli("parsenet-eval", f"checkpoint={foreign}", f"hydra.run.dir={tmp_path / 'o'}")
    assert_one_line_error(result, f"checkpoint {foreign} is not a parsenet checkpoint (")
    assert "\x1b[" not in result.stderr
    for advice in ("weights_only", "trust", "safe_globals", "can still be loaded"):
        assert advice not in result.stderr, result.stderr


# --- Ctrl-C while predicting -------------------------------------------------------------------


def test_ctrl_c_while_predicting_leaves_only_complete_pngs(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    inputs = tmp_path / "in"
    for seed, name in enumerate(("a", "b", "c")):
        save_image(inputs / f"{name}.jpg", 24, 32, seed)
    loaded = parsenet.load_for_inference(checkpoint, device="cpu")
    real_save = Image.Image.save
    calls = []

    def interrupted_save(image, target, *args, **kwargs):
        """Write the first image's three files, then half of the second image's overlay."""
        calls.append(target)
        if len(calls) == 5:
            target.write(b"\x89PNG\r\n\x1a\n half of a picture")
            raise KeyboardInterrupt
        return real_save(image, target, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_files(loaded, inputs, out, batch_size=1)
    monkeypatch.undo()
    leftovers = [path for path in out.rglob("*") if ".tmp-" in path.name]
    assert leftovers == []
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*.png"))
    assert written == ["labels/a.png", "labels/b.png", "overlays/a.png", "side_by_side/a.png"]
    for path in out.rglob("*.png"):
        with Image.open(path) as png:
            png.load()  # complete pictures only

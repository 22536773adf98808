"""The paper's tables as configs: every experiment row composes and builds the model it names;
the Caffe recipe; the ablation runner end to end (in miniature)."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY_SYNTHETIC, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from parsenet.data import dataset_info
from parsenet.engine.runtime.checkpoint import load_checkpoint
from parsenet.models import L2Norm, build_model

EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))
TABLES = sorted(p.stem for p in (REPO / "configs" / "ablation").glob("*.yaml"))
PAPER_TABLES = ["context60", "siftflow", "voc12"]  # the VGG16 rows of the paper
MODERN_TABLES = sorted(set(TABLES) - set(PAPER_TABLES))  # trunk_dataset: ParseNet vs other heads
# Name parts of the modern-trunk experiments → what they set.
HEAD_OF = {
    "parsenet-baseline": "parsenet",
    "parsenet": "parsenet",
    "parsenet-early": "parsenet",
    "deeplabv3-aspp": "aspp",
    "lraspp": "lraspp",
}
ARCH_OF = {
    "resnet50-os8": "resnet50_d8",
    "resnet101-os8": "resnet101_d8",
    "mobilenetv3-os16": "mobilenet_v3_large",
}
DATA_OF = {"voc12aug": "voc", "context60": "context60", "camvid": "camvid"}  # data.name


def table_rows(table: str) -> list[dict]:
    rows = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "ablation" / f"{table}.yaml"))
    assert rows["rows"] and rows["baseline"] in [row["experiment"] for row in rows["rows"]]
    return rows["rows"]


def compose_train(*overrides: str) -> dict:
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=True)


@pytest.mark.parametrize("table", PAPER_TABLES)
def test_every_table_row_is_an_experiment_that_builds(table):
    for row in table_rows(table):
        name = row["experiment"]
        assert name in EXPERIMENTS and row["source"], name
        cfg = compose_train(f"experiment={name}", "model.backbone.width_mult=0.0625")
        assert cfg["model"]["name"] == name
        assert cfg["loss"]["reduction"] == "sum"
        assert cfg["model"]["backbone"]["pretrained"] == "imagenet"
        model = build_model(cfg["model"], dataset_info(cfg["data"]).num_classes)
        head, trunk = cfg["model"]["head"], cfg["model"]["backbone"]
        taps = head["taps"] or [model.backbone.deepest_tap, "pool6"]  # null: the default taps
        assert set(model.head.spatial_taps) == {t for t in taps if t != "pool6"}
        assert bool(model.head.context_bins) == ("pool6" in taps)
        norms = sum(isinstance(m, L2Norm) for m in model.modules())
        assert norms == (len(taps) if head["normalize"] else 0), name
        # The name says the setup: trunk stride, dataset, and normalisation where it varies.
        assert f"os{model.backbone.output_stride}" in name
        assert ("l2norm" in name) == head["normalize"] or "voc12aug" in name
        assert trunk["arch"] == ("vgg16_fcn32" if name.startswith("fcn32s") else "reduced_vgg16")


def test_voc_rows_differ_only_in_what_their_names_say():
    released = compose_train("experiment=parsenet_vgg16-os8_voc12aug")["model"]
    early = compose_train("experiment=parsenet-early_vgg16-os8_voc12aug")["model"]
    nonorm = compose_train("experiment=parsenet-nonorm_vgg16-os8_voc12aug")["model"]
    baseline = compose_train("experiment=parsenet-baseline_vgg16-os8_voc12aug")["model"]
    assert released["head"] == {**early["head"], "fusion": "late"}
    assert released["head"] == {**nonorm["head"], "normalize": True}
    assert baseline["head"]["taps"] == ["fc7"] and not baseline["head"]["normalize"]
    assert released["head"]["fusion"] == "late"
    head = build_model({**released, "backbone": {"width_mult": 0.0625}}, 21).head
    assert head.spatial_taps == ("fc7",) and head.context_bins == (1,)  # taps: fc7 and pool6


@pytest.mark.parametrize("table", MODERN_TABLES)
def test_every_modern_table_row_is_the_trunk_head_and_data_its_name_says(table):
    """``{head}_{trunk}-os{stride}_{data}`` rows on the GPU recipe; one dataset per trunk also
    builds its models (the others differ only in the data node)."""
    for row in table_rows(table):
        name = row["experiment"]
        head_part, trunk_part, data_part = name.split("_")
        cfg = compose_train(f"experiment={name}")
        model_cfg = cfg["model"]
        assert model_cfg["name"] == name and cfg["data"]["name"] == DATA_OF[data_part]
        assert model_cfg["backbone"]["arch"] == ARCH_OF[trunk_part]
        assert model_cfg["head"]["type"] == HEAD_OF[head_part]
        assert model_cfg["backbone"]["pretrained"] == "imagenet"  # recipe=gpu_40k
        assert (cfg["optim"]["lr"], cfg["train"]["batch_size"]) == (0.01, 16)
        if data_part != "camvid":
            continue
        model = build_model(model_cfg, dataset_info(cfg["data"]).num_classes)
        assert f"os{model.backbone.output_stride}" in trunk_part
        deepest = model.backbone.deepest_tap
        if head_part == "parsenet-baseline":
            assert model.head.spatial_taps == (deepest,) and not model.head.context_bins
            assert not any(isinstance(m, L2Norm) for m in model.modules())
        elif head_part.startswith("parsenet"):
            assert model.head.spatial_taps == (deepest,) and model.head.context_bins == (1,)
            assert model.head.fusion == ("early" if head_part.endswith("early") else "late")


@pytest.mark.parametrize("model", ["parsenet", "fcn", "fcn32s"])
def test_scale_defaults_live_in_the_code_and_can_be_overridden(model):
    """The configs leave γ unset (FusionHead's defaults); one tap can be set from the command
    line and the others keep their defaults."""
    tiny, taps = "model.backbone.width_mult=0.0625", "model.head.taps=[conv4_3,fc7,pool6]"
    assert compose_train(f"model={model}")["model"]["head"]["scale_init"] is None
    for override in ("model.head.scale_init={conv4_3: 30}", "+model.head.scale_init.conv4_3=30"):
        cfg = compose_train(f"model={model}", tiny, taps, "model.head.normalize=true", override)
        assert cfg["model"]["head"]["scale_init"] == {"conv4_3": 30}
        norms = build_model(cfg["model"], 5).head.norms
        scales = {key: norm.weight.unique().tolist() for key, norm in norms.items()}
        assert scales == {"conv4_3": [30.0], "fc7": [10.0], "pool6_1x1": [10.0]}


def test_no_experiment_sets_its_own_scale_defaults():
    for name in EXPERIMENTS:
        assert compose_train(f"experiment={name}")["model"]["head"].get("scale_init") is None, name


def test_caffe_recipe_is_the_original_solver():
    cfg = compose_train("recipe=caffe")
    assert cfg["optim"]["_target_"] == "torch.optim.SGD"
    assert cfg["optim"]["lr"] == 1e-8 and cfg["optim"]["momentum"] == 0.9
    assert cfg["optim"]["weight_decay"] == 5e-4
    train = cfg["train"]
    assert (train["batch_size"], train["iter_size"], cfg["loss"]["reduction"]) == (1, 8, "sum")
    assert (train["max_iters"], cfg["schedule"]["power"]) == (20000, 0.9)
    assert (cfg["lr_mult"]["new_layers"], cfg["lr_mult"]["bias"]) == (10, 2)
    assert cfg["data"]["augment"] == {"crop_size": None, "scale_range": [1.0, 1.0], "flip": False}
    # A command-line recipe replaces the one an experiment names.
    mini = compose_train("experiment=parsenet_vgg16-os8_voc12aug", "recipe=cpu_miniature")
    assert mini["loss"]["reduction"] == "mean" and mini["model"]["backbone"]["pretrained"] == "none"


def tiny_ablation(tmp_path: Path) -> list[str]:
    """Overrides that make every row of a table a 2-iteration run on a tiny synthetic set."""
    return [
        "data=synthetic",
        f"data.root={tmp_path / 'synthetic'}",
        *TINY_SYNTHETIC,
        "recipe=cpu_miniature",
        "model.backbone.width_mult=0.0625",
        "train.max_iters=2",
        "train.eval_every=0",
        "train.num_overlays=0",
    ]


def run_ablate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "ablate.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


# slow: 40 s; the --seeds runner (tests/test_ablate_seeds.py) covers ablate.py by default
@pytest.mark.slow
def test_ablation_runner_writes_the_table_and_resumes(tmp_path: Path):
    out = tmp_path / "table"
    rows = "parsenet_vgg16-os8_voc12aug,parsenet-baseline_vgg16-os8_voc12aug"
    overrides = tiny_ablation(tmp_path)
    result = run_ablate("voc12", "--out", str(out), "--rows", rows, *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(out / "table.csv") as handle:
        table = {row["experiment"]: row for row in csv.DictReader(handle)}
    assert list(table) == [
        row["experiment"]
        for row in OmegaConf.load(REPO / "configs" / "ablation" / "voc12.yaml")["rows"]
    ]
    assert table["parsenet-early_vgg16-os8_voc12aug"]["mIoU"] == ""  # not run
    released = table["parsenet_vgg16-os8_voc12aug"]
    metrics = json.loads((out / "parsenet_vgg16-os8_voc12aug" / "metrics.json").read_text())
    assert released["mIoU"] == f"{100 * metrics['mIoU']:.2f}"
    assert released["paper mIoU"] == "69.55" and "[V]" in released["paper source"]
    markdown = (out / "table.md").read_text()
    assert "| ParseNet, late fusion (as released) |" in markdown and "data=synthetic" in markdown

    # Interrupted rows: one has a checkpoint and continues from it, one has none and starts over.
    (out / "parsenet-baseline_vgg16-os8_voc12aug" / "metrics.json").unlink()
    kept = (out / "parsenet_vgg16-os8_voc12aug" / "metrics.json").stat().st_mtime_ns
    result = run_ablate("voc12", "--out", str(out), "--rows", rows, *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "parsenet_vgg16-os8_voc12aug: done before" in result.stdout
    assert "parsenet-baseline_vgg16-os8_voc12aug: unfinished run" in result.stdout
    assert "resuming it" in result.stdout
    assert (out / "parsenet_vgg16-os8_voc12aug" / "metrics.json").stat().st_mtime_ns == kept
    baseline = out / "parsenet-baseline_vgg16-os8_voc12aug"
    shutil.rmtree(baseline / "checkpoints")
    (baseline / "metrics.json").unlink()
    result = run_ablate("voc12", "--out", str(out), "--rows", rows, *overrides)
    assert result.returncode == 0 and "training it again" in result.stdout
    assert (baseline / "metrics.json").is_file()

    report = tmp_path / "norms.md"
    checkpoint = out / "parsenet_vgg16-os8_voc12aug" / "checkpoints" / "last.pt"
    script = [sys.executable, str(REPO / "scripts" / "feature_norms.py"), "--images", "2"]
    norms = subprocess.run(
        [*script, "--out", str(report), str(checkpoint)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert norms.returncode == 0, norms.stderr[-2000:]
    assert "| head.norms.pool6_1x1 | 64 |" in report.read_text()

    mixed = run_ablate("voc12", "--out", str(out), "--rows", rows, *overrides, "seed=3")
    assert mixed.returncode != 0 and "use another --out" in mixed.stderr


def test_model_options_and_the_caffe_recipe_from_the_command_line(tmp_path: Path):
    """Every head option reaches the model through the real CLI; the Caffe recipe (batch 1,
    whole images, summed loss) trains; the checkpoint evaluates with the same architecture."""
    run = tmp_path / "run"
    result = run_cli(
        "parsenet-train",
        "recipe=caffe",
        "model.backbone.pretrained=none",
        "model.backbone.arch=vgg16_fcn32",
        "model.backbone.width_mult=0.0625",
        "model.head.taps=[conv4_3,fc7,pool6]",
        "model.head.context_bins=[1,2]",
        "model.head.context_dropout=0.1",
        "model.head.fusion=early",
        "model.head.channel_shared=true",
        "model.head.learn_scale=false",
        "model.head.scale_init={conv4_3: 5}",
        "model.upsample=bilinear",
        "train.max_iters=2",
        "train.iter_size=2",
        "train.num_overlays=0",
        f"data.root={tmp_path / 'synthetic'}",
        *TINY_SYNTHETIC,
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    weights, cfg = checkpoint["model"], checkpoint["config"]
    assert (cfg["train"]["batch_size"], cfg["loss"]["reduction"]) == (1, "sum")
    assert weights["head.norms.conv4_3.weight"].tolist() == [5.0]  # shared, fixed
    assert weights["head.norms.pool6_2x2.weight"].tolist() == [10.0]
    assert weights["head.scores.fused.weight"].shape[1] == 32 + 256 + 2 * 256
    assert not any(key.startswith("upsample.") for key in weights)
    evaluation = run_cli(
        "parsenet-eval",
        f"checkpoint={run / 'checkpoints' / 'last.pt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert evaluation.returncode == 0, evaluation.stderr[-2000:]
    trained = json.loads((run / "metrics.json").read_text())
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["mIoU"] == trained["mIoU"]

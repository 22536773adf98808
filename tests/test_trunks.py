"""ParseNet's context on the modern trunks: every trunk × head built from the configs (taps,
strides, output size, γ defaults, lr groups), the batch-of-one claim, ImageNet starts and frozen
BatchNorm, and, per trunk, training, exact resume, evaluation, prediction and export parity."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SYNTHETIC, assert_one_line_error, run_cli
from torchvision.models import mobilenet_v3_large, resnet50

import parsenet
from parsenet.config import compose
from parsenet.engine.runtime.checkpoint import load_checkpoint
from parsenet.engine.training.optim import parameter_groups
from parsenet.engine.training.trainer import Trainer
from parsenet.errors import ConfigError
from parsenet.export import export_checkpoint
from parsenet.models import build_model
from parsenet.models.l2norm import L2Norm
from parsenet.models.pretrained import initialise_backbone, resolve_pretrained

# (model/backbone choice, extra backbone overrides): MobileNet at a quarter of its width keeps the
# tests fast; the ResNets have no width multiplier and run at full width on tiny images.
TRUNKS = {
    "resnet50_d8": [],
    "resnet101_d8": [],
    "mobilenet_v3_large": ["model.backbone.width_mult=0.25"],
}
HEADS = {
    "parsenet": ["model/head=parsenet"],
    "parsenet-early": ["model/head=parsenet", "model.head.fusion=early"],
    "aspp": ["model/head=aspp"],
    "lraspp": ["model/head=lraspp"],
    "fcn_head": ["model/head=fcn_head"],
}
ODD_SIZE = (67, 93)  # neither a multiple of 8 nor of 16
SMALL_ODD_SIZE = (35, 45)
# Every head on ResNet-50 and MobileNetV3; ResNet-101 is ResNet-50's class with more blocks.
TRUNK_HEADS = [(trunk, head) for trunk in ("resnet50_d8", "mobilenet_v3_large") for head in HEADS]
TRUNK_HEADS.append(("resnet101_d8", "parsenet"))


def model_overrides(trunk: str, head: str, *more: str) -> list[str]:
    return [f"model/backbone={trunk}", *TRUNKS[trunk], *HEADS[head], *more]


def build(trunk: str, head: str, *more: str, num_classes: int = 5):
    cfg = compose("train", model_overrides(trunk, head, *more))
    return build_model(cfg["model"], num_classes), cfg


@pytest.mark.parametrize(
    ("trunk", "output_stride", "strides"),
    [
        ("resnet50_d8", 8, {"layer1": 4, "layer2": 8, "layer3": 8, "layer4": 8}),
        ("resnet50_d8", 16, {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 16}),
        ("mobilenet_v3_large", 16, {"low": 8, "high": 16}),
        ("mobilenet_v3_large", 8, {"low": 8, "high": 8}),
    ],
)
def test_taps_have_the_declared_channels_and_strides_at_odd_sizes(trunk, output_stride, strides):
    model, _ = build(trunk, "parsenet", f"model.backbone.output_stride={output_stride}")
    backbone = model.backbone
    assert backbone.tap_strides == strides and backbone.output_stride == output_stride
    features = backbone.features(torch.rand(1, 3, *ODD_SIZE), tuple(strides))
    for tap, stride in strides.items():
        expected = (backbone.tap_channels[tap], *(math.ceil(n / stride) for n in ODD_SIZE))
        assert tuple(features[tap].shape[1:]) == expected, tap


def test_mobilenet_at_stride_16_is_torchvisions_dilated_layout():
    def spatial_convs(module: torch.nn.Module) -> list[tuple]:
        return [
            (m.stride, m.dilation, m.padding, m.kernel_size)
            for m in module.modules()
            if isinstance(m, torch.nn.Conv2d)
        ]

    ours = build_model({"backbone": {"arch": "mobilenet_v3_large"}}, 5).backbone.layers
    theirs = mobilenet_v3_large(dilated=True).features
    assert spatial_convs(ours) == spatial_convs(theirs)


@pytest.mark.parametrize(("trunk", "head"), TRUNK_HEADS)
def test_every_head_on_every_trunk_scores_every_pixel_and_learns(trunk, head):
    model, cfg = build(trunk, head)
    images = torch.rand(2, 3, *SMALL_ODD_SIZE)
    scores = model(images)
    assert scores.shape == (2, 5, *SMALL_ODD_SIZE)
    scores.logsumexp(1).mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)
    # The head is new (lr × new_layers), the trunk is base; L2Norm scales are a role of their own.
    mult = cfg["lr_mult"]
    groups = parameter_groups(model, 1.0, 0.0, mult["new_layers"], mult["bias"])
    by_name = {group["name"]: {id(p) for p in group["params"]} for group in groups}
    head_ids = {
        id(p)
        for module in model.head.modules()
        if not isinstance(module, L2Norm)
        for p in module.parameters(recurse=False)
    }
    assert head_ids == by_name["new_weight"] | by_name.get("new_bias", set())
    trunk_ids = {id(p) for p in model.backbone.parameters()}
    assert trunk_ids <= by_name["base_weight"] | by_name["base_bias"]


@pytest.mark.parametrize(
    ("trunk", "taps", "expected"),
    [
        ("resnet50_d8", None, {"layer4": 10.0, "pool6_1x1": 10.0}),
        ("resnet50_d8", "[layer3,layer4,pool6]", {"layer3": 20.0, "layer4": 10.0}),
        ("mobilenet_v3_large", None, {"high": 10.0, "pool6_1x1": 10.0}),
        ("mobilenet_v3_large", "[low,high,pool6]", {"low": 20.0, "high": 10.0}),
    ],
)
def test_gamma_starts_at_the_per_tap_default(trunk, taps, expected):
    more = [] if taps is None else [f"model.head.taps={taps}"]
    model, _ = build(trunk, "parsenet", *more)
    for key, gamma in expected.items():
        assert torch.all(model.head.norms[key].weight == gamma), key


def one_image_steps(model: torch.nn.Module, steps: int = 4) -> list[float]:
    """Training steps on one fixed image (batch size 1) with AdamW; the losses."""
    torch.manual_seed(0)
    images, labels = torch.rand(1, 3, 48, 48), torch.randint(0, 5, (1, 48, 48))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("trunk", ["resnet50_d8", "mobilenet_v3_large"])
def test_parsenets_context_trains_on_one_image_where_batchnorm_pooling_cannot(trunk):
    torch.manual_seed(0)
    parsenet_model, _ = build(trunk, "parsenet")
    assert isinstance(parsenet_model.head.norms["pool6_1x1"], L2Norm)
    losses = one_image_steps(parsenet_model)
    assert losses[-1] < losses[0]
    for head, more in (("parsenet", ["model.head.context_norm=batchnorm"]), ("aspp", [])):
        model, _ = build(trunk, head, *more)
        assert model.head.pooled_batchnorm
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            one_image_steps(model, steps=1)


def modern_train(tmp_path: Path, trunk: str, *overrides: str, batch: int | None = 2) -> dict:
    """A tiny training config of a modern trunk on the synthetic data (``batch`` images a
    step; None: as configured)."""
    return compose(
        "train",
        [
            *model_overrides(trunk, "parsenet"),
            *TINY_SYNTHETIC,
            "optim=adamw",
            f"paths.data_root={tmp_path / 'data'}",
            *([] if batch is None else [f"train.batch_size={batch}"]),
            "train.num_overlays=0",
            "train.eval_every=0",
            *overrides,
        ],
    )


def test_a_batchnorm_pooled_head_at_batch_size_one_is_one_line_before_training(tmp_path: Path):
    run = tmp_path / "run"
    result = run_cli(
        "train",
        *model_overrides("mobilenet_v3_large", "aspp"),
        *TINY_SYNTHETIC,
        f"paths.data_root={tmp_path / 'data'}",
        "train.batch_size=1",
        f"hydra.run.dir={run}",
    )
    assert_one_line_error(
        result, "model.head.type=aspp", "train.batch_size=1", "model/head=parsenet"
    )
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize("trunk", ["resnet50_d8", "mobilenet_v3_large"])
def test_the_papers_recipe_runs_on_the_modern_trunks(tmp_path: Path, trunk: str):
    """recipe=caffe: batch 1 × iter_size 8, whole images, summed loss (trunk BatchNorm sees a map
    of many values per channel even at batch 1)."""
    overrides = ("recipe=caffe", "model.backbone.pretrained=none", "train.max_iters=2")
    cfg = modern_train(tmp_path, trunk, *overrides, batch=None)
    assert (cfg["train"]["batch_size"], cfg["train"]["iter_size"]) == (1, 8)
    metrics = Trainer(cfg, tmp_path / "run").run()
    assert math.isfinite(metrics["mIoU"])


def test_bn_momentum_replaces_torchvisions():
    default, _ = build("mobilenet_v3_large", "parsenet")
    assert {norm.momentum for norm in default.backbone.batchnorms()} == {0.01}
    model, _ = build("mobilenet_v3_large", "parsenet", "model.backbone.bn_momentum=0.1")
    assert {norm.momentum for norm in model.backbone.batchnorms()} == {0.1}
    with pytest.raises(ConfigError, match="bn_momentum must be in"):
        build("resnet50_d8", "parsenet", "model.backbone.bn_momentum=0")


def test_frozen_batchnorm_keeps_its_statistics_and_gets_no_gradient():
    model, _ = build("mobilenet_v3_large", "parsenet", "model.backbone.freeze_bn=true")
    norms = model.backbone.batchnorms()
    before = [norm.running_mean.clone() for norm in norms]
    model.train()
    assert not any(norm.training for norm in norms)
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    assert all(torch.equal(a, norm.running_mean) for a, norm in zip(before, norms, strict=True))
    assert all(p.grad is None and not p.requires_grad for n in norms for p in n.parameters())
    grouped = {id(p) for g in parameter_groups(model, 1.0, 0.0) for p in g["params"]}
    assert not grouped & {id(p) for n in norms for p in n.parameters()}


@pytest.mark.parametrize(
    ("trunk", "classifier"),
    [("mobilenet_v3_large", mobilenet_v3_large), ("resnet50_d8", resnet50)],
)
def test_imagenet_weights_load_from_the_torchvision_state_dict(
    tmp_path: Path, monkeypatch, trunk, classifier
):
    torch.manual_seed(1)
    state = classifier().state_dict()
    model = build_model({"backbone": {"arch": trunk}}, 5)
    # A file of the state dict, and the same file in the hub cache standing in for the download.
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    assert initialise_backbone(model.backbone, str(path)) == "torchvision"
    first_conv = "0.0.weight" if trunk.startswith("mobilenet") else "conv1.weight"
    expected = state[("features." if trunk.startswith("mobilenet") else "") + first_conv]
    assert torch.equal(model.backbone.layers.state_dict()[first_conv], expected)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = model.backbone.imagenet_weights.url
    cached = tmp_path / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    fresh = build_model({"backbone": {"arch": trunk}}, 5)
    assert initialise_backbone(fresh.backbone, "imagenet") == "torchvision"
    assert torch.equal(fresh.backbone.layers.state_dict()[first_conv], expected)


def test_imagenet_offline_and_wrong_files_are_one_line(tmp_path: Path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    trunk = build_model({"backbone": {"arch": "mobilenet_v3_large"}}, 5).backbone
    with pytest.raises(ConfigError) as caught:
        initialise_backbone(trunk, "imagenet")
    message = str(caught.value)
    assert (
        trunk.imagenet_weights.url in message and str(tmp_path / "hub" / "checkpoints") in message
    )
    assert "model.backbone.pretrained=none" in message and "\n" not in message
    wrong = tmp_path / "resnet.pth"
    torch.save(resnet50().state_dict(), wrong)
    with pytest.raises(ConfigError, match="is not a torchvision mobilenet_v3_large state dict"):
        initialise_backbone(trunk, str(wrong))
    narrow = build_model(
        {"backbone": {"arch": "mobilenet_v3_large", "width_mult": 0.5}}, 5
    ).backbone
    with pytest.raises(ConfigError, match="width_mult=1.0"):
        initialise_backbone(narrow, "imagenet")


def test_pretrained_auto_names_the_trunks_weights():
    trunk = build_model({"backbone": {"arch": "resnet101_d8"}}, 5).backbone
    source, why = resolve_pretrained("auto", "camvid", trunk.width_mult, trunk.weights_name)
    assert source == "imagenet" and "ResNet101_Weights.IMAGENET1K_V1" in why
    assert resolve_pretrained("auto", "synthetic", 1.0, trunk.weights_name)[0] == "none"


def test_a_setting_of_another_trunk_is_one_line():
    with pytest.raises(ConfigError, match="model.backbone.width_mult is not a setting of ResNet"):
        build_model({"backbone": {"arch": "resnet50_d8", "width_mult": 0.5}}, 5)
    with pytest.raises(ConfigError, match="head.type must be one of"):
        build_model({"head": {"type": "psp"}}, 5)


@pytest.fixture(scope="module", params=["mobilenet_v3_large", "resnet50_d8"])
def trained(request, tmp_path_factory) -> tuple[str, Path, dict]:
    """4 iterations of ParseNet on the trunk, with a snapshot at 2."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    settings = ["train.max_iters=4", "train.checkpoint_every=2", "train.keep_snapshots=5"]
    cfg = modern_train(tmp_path, request.param, *settings)
    Trainer(cfg, tmp_path / "whole").run()
    return request.param, tmp_path, cfg


def test_resume_continues_exactly(trained):
    trunk, tmp_path, cfg = trained
    snapshot = tmp_path / "whole" / "checkpoints" / "iter_000002.pt"
    settings = ["train.max_iters=4", "train.checkpoint_every=2", f"train.resume={snapshot}"]
    Trainer(modern_train(tmp_path, trunk, *settings), tmp_path / "resumed").run()
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    assert whole.keys() == resumed.keys()
    assert any("running_mean" in key for key in whole)  # BatchNorm statistics resume too
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_agrees_with_the_model_at_two_sizes(trained, fmt):
    _, tmp_path, _ = trained
    checkpoint = tmp_path / "whole" / "checkpoints" / "last.pt"
    about = export_checkpoint(
        checkpoint,
        fmt,
        tmp_path / f"model.{fmt}",
        tmp_path / f"{fmt}.json",
        check_sizes=[[45, 61], [64, 40]],
    )
    for check in about["parity"]:
        assert check["argmax_agreement"] >= 0.999 and check["max_abs_diff"] < 1e-3, check


def test_evaluate_and_predict_in_every_mode(trained):
    _, tmp_path, _ = trained
    checkpoint = tmp_path / "whole" / "checkpoints" / "last.pt"
    loaded = parsenet.load_for_inference(checkpoint, "cpu")
    image = np.random.default_rng(0).integers(0, 256, (37, 71, 3), dtype=np.uint8)
    for mode in ("whole", "slide", "msflip"):
        inference = parsenet.InferenceMode(mode=mode, crop=32, stride=24, scales=(0.75, 1.0))
        labels = parsenet.predict(loaded, image, inference)
        assert labels.shape == (37, 71) and labels.max() < loaded.num_classes
        result = parsenet.evaluate(checkpoint, {"num_workers": 0}, mode=inference, device="cpu")
        assert 0 <= result.scores["mIoU"] <= 1 and result.num_images == 6

"""ImageNet initialisation: the fc6/fc7 surgery, file formats, input conventions, offline use."""

import json
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import TINY_MODEL, TINY_SYNTHETIC, run_cli

import parsenet
from parsenet.errors import ConfigError
from parsenet.models import build_model
from parsenet.models.pretrained import (
    IMAGENET_URL,
    REDUCED_FC_INDICES,
    VGG16_CONV_INDICES,
    choose_input_norm,
    initialise_backbone,
    resolve_pretrained,
)

FCN32 = {"backbone": {"arch": "vgg16_fcn32"}, "head": {"taps": ["fc7"], "normalize": False}}


@pytest.fixture(scope="module")
def torchvision_vgg16(tmp_path_factory) -> tuple[Path, dict]:
    """A randomly initialised torchvision VGG16, saved as its state dict."""
    torch.manual_seed(0)
    state = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "vgg16-397923af.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def reducedfc(tmp_path_factory, torchvision_vgg16) -> tuple[Path, dict]:
    """A ``vgg16_reducedfc.pth`` in the SSD ports' layout (keys 0.weight … 33.weight)."""
    trunk = build_model({}, 21).backbone
    initialise_backbone(trunk, str(torchvision_vgg16[0]))
    indices = {**VGG16_CONV_INDICES, **REDUCED_FC_INDICES}
    state = {}
    for name, conv in trunk.convolutions().items():
        state[f"{indices[name]}.weight"] = conv.weight.detach().clone()
        state[f"{indices[name]}.bias"] = conv.bias.detach().clone()
    path = tmp_path_factory.mktemp("weights") / "vgg16_reducedfc.pth"
    torch.save(state, path)
    return path, state


def test_reduced_fc6_is_the_subsampled_7x7_convolution(torchvision_vgg16):
    """fc6 (3×3, dilation 12) equals VGG16's 7×7 fc6 at dilation 4 keeping only taps 0, 3, 6 of
    every fourth output channel — the original net surgery, checked by direct computation."""
    path, state = torchvision_vgg16
    trunk = build_model({}, 21).backbone
    assert initialise_backbone(trunk, str(path)) == "torchvision"
    fc6 = trunk.convolutions()["fc6"]
    full = state["classifier.0.weight"].view(4096, 512, 7, 7)[::4]
    mask = torch.zeros(7, 7)
    mask[::3, ::3] = 1
    x = torch.randn(1, 512, 30, 30)
    with torch.no_grad():
        direct = F.conv2d(x, full * mask, state["classifier.0.bias"][::4], padding=12, dilation=4)
        torch.testing.assert_close(fc6(x), direct, rtol=1e-4, atol=1e-4)
    fc7 = trunk.convolutions()["fc7"]
    assert fc7.weight.shape == (1024, 1024, 1, 1)
    assert torch.equal(fc7.weight[:, :, 0, 0], state["classifier.3.weight"][::4, ::4])
    assert torch.equal(fc7.bias, state["classifier.3.bias"][::4])
    conv4_3 = trunk.convolutions()["conv4_3"]
    assert torch.equal(conv4_3.weight, state["features.21.weight"])


def test_fcn32_fc6_is_vgg16s_classifier_applied_everywhere(torchvision_vgg16):
    """On a 7×7 map the 7×7 fc6 convolution computes VGG16's first fully connected layer."""
    path, state = torchvision_vgg16
    trunk = build_model(FCN32, 21).backbone
    initialise_backbone(trunk, str(path))
    fc6 = trunk.convolutions()["fc6"]
    x = torch.randn(2, 512, 7, 7)
    with torch.no_grad():
        conv = F.conv2d(x, fc6.weight, fc6.bias)  # no padding: one output location
        linear = F.linear(x.flatten(1), state["classifier.0.weight"], state["classifier.0.bias"])
    torch.testing.assert_close(conv.flatten(1), linear, rtol=1e-4, atol=1e-4)


def test_reducedfc_file_loads_and_asks_for_caffe_inputs(reducedfc, torchvision_vgg16):
    path, state = reducedfc
    trunk = build_model({}, 21).backbone
    assert initialise_backbone(trunk, str(path)) == "caffe"
    assert torch.equal(trunk.convolutions()["fc6"].weight, state["31.weight"])
    prefixed = path.with_name("prefixed.pth")
    torch.save({f"vgg.{key}": value for key, value in state.items()}, prefixed)
    assert initialise_backbone(build_model({}, 21).backbone, str(prefixed)) == "caffe"
    with pytest.raises(ConfigError, match="fits backbone.arch=reduced_vgg16"):
        initialise_backbone(build_model(FCN32, 21).backbone, str(path))


def test_input_norm_follows_the_weights():
    assert choose_input_norm("auto", None) == "torchvision"
    assert choose_input_norm("auto", "caffe") == "caffe"
    assert choose_input_norm("caffe", "caffe") == "caffe"
    assert choose_input_norm("caffe", None) == "caffe"
    with pytest.raises(ConfigError, match="model.input_norm=torchvision does not match"):
        choose_input_norm("torchvision", "caffe")


def test_imagenet_comes_from_the_hub_cache(torchvision_vgg16, tmp_path, monkeypatch):
    path, state = torchvision_vgg16
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / Path(IMAGENET_URL).name
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    trunk = build_model({}, 21).backbone
    assert initialise_backbone(trunk, "imagenet") == "torchvision"
    assert torch.equal(trunk.convolutions()["conv1_1"].weight, state["features.0.weight"])


@pytest.mark.parametrize("pretrained", ["imagenet", "auto"])
def test_imagenet_offline_says_where_to_put_the_file_or_to_pass_none(
    pretrained, tmp_path, monkeypatch
):
    from parsenet.engine.training.assembly import initialised_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    model_cfg = {"backbone": {"pretrained": pretrained}}
    with pytest.raises(ConfigError) as caught:
        initialised_model(model_cfg, 21, "voc_aug")  # auto: imagenet for real data, full width
    message = str(caught.value)
    said = {"imagenet": "", "auto": " (imagenet for data voc_aug at full width)"}[pretrained]
    assert message.startswith(f"model.backbone.pretrained={pretrained}{said}: cannot download")
    assert IMAGENET_URL in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "model.backbone.pretrained=none" in message and "\n" not in message


def test_bad_sources_are_one_line_errors(tmp_path, torchvision_vgg16):
    trunk = build_model({}, 21).backbone
    with pytest.raises(ConfigError, match="no such file"):
        initialise_backbone(trunk, str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read it as a PyTorch state dict"):
        initialise_backbone(trunk, str(garbage))
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ConfigError, match="neither a torchvision VGG16"):
        initialise_backbone(trunk, str(other))
    narrow = build_model({"backbone": {"width_mult": 0.5}}, 21).backbone
    with pytest.raises(ConfigError, match="width_mult=1.0"):
        initialise_backbone(narrow, str(torchvision_vgg16[0]))
    assert initialise_backbone(trunk, "none") is None


# slow: 37 s (two full-width runs)
@pytest.mark.slow
def test_training_records_the_weights_convention_and_eval_uses_it(tmp_path, reducedfc):
    """Train one step from vgg16_reducedfc.pth (input_norm=auto → caffe); the checkpoint says
    caffe, and evaluating it reproduces the training run's final scores."""
    run = tmp_path / "run"
    data = [f"data.root={tmp_path / 'synthetic'}", *TINY_SYNTHETIC]
    result = run_cli(
        "parsenet-train",
        f"model.backbone.pretrained={reducedfc[0]}",
        "train.max_iters=1",
        "train.batch_size=2",
        "train.num_overlays=0",
        *data,
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["config"]["model"]["input_norm"] == "caffe"
    evaluation = run_cli(
        "parsenet-eval",
        f"checkpoint={run / 'checkpoints' / 'last.pt'}",
        f"hydra.run.dir={tmp_path / 'e'}",
    )
    assert evaluation.returncode == 0, evaluation.stderr
    trained = json.loads((run / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert evaluated["mIoU"] == trained["mIoU"]
    clash = run_cli(
        "parsenet-train",
        "model.input_norm=torchvision",
        f"model.backbone.pretrained={reducedfc[0]}",
        *data,
    )
    assert clash.returncode == 2 and "model.input_norm=torchvision does not match" in clash.stderr


def test_auto_is_imagenet_for_real_data_at_full_width_only():
    imagenet, why = resolve_pretrained("auto", "voc_aug", 1.0)
    assert imagenet == "imagenet" and "data voc_aug" in why and "pretrained=none" in why
    none, why = resolve_pretrained("auto", "synthetic", 1.0)
    assert none == "none" and "synthetic" in why
    none, why = resolve_pretrained("auto", "camvid", 0.25)
    assert none == "none" and "width_mult=0.25" in why
    for explicit in ("none", "imagenet", "/weights/vgg16.pth", None):
        assert resolve_pretrained(explicit, "voc_aug", 1.0) == (explicit, "")
    with pytest.raises(ConfigError, match="resolved from the data and width"):
        initialise_backbone(build_model({}, 21).backbone, "auto")


def compose(*overrides: str) -> dict:
    return parsenet.compose("train", list(overrides))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data=voc_aug"], "imagenet"),  # the obvious command: the paper's start
        (["data=voc_aug", "model=fcn"], "imagenet"),
        (["data=camvid", "model=fcn32s"], "imagenet"),
        ([], "none"),  # the synthetic data
        (["experiment=demo", "model=parsenet"], "none"),  # synthetic, quarter width
        (["data=voc_aug", "recipe=cpu_miniature"], "none"),
        (["data=voc_aug", "model.backbone.width_mult=0.5"], "none"),
        (["data=voc_aug", *TINY_MODEL], "none"),  # what the tests train
    ],
)
def test_what_the_default_starts_from(overrides, expected):
    cfg = compose(*overrides)
    requested = cfg["model"]["backbone"]["pretrained"]
    assert requested in ("auto", "none")
    trunk = cfg["model"]["backbone"]
    assert resolve_pretrained(requested, cfg["data"]["name"], trunk["width_mult"])[0] == expected
    if expected == "imagenet":  # with the paper's SGD and a learning rate for the mean loss
        assert cfg["optim"]["_target_"] == "torch.optim.SGD" and cfg["optim"]["lr"] == 1e-3
        assert cfg["loss"]["reduction"] == "mean" and cfg["train"]["batch_size"] == 8


def test_default_training_on_real_data_starts_from_the_cached_imagenet_weights(
    torchvision_vgg16, voc_root, tmp_path, monkeypatch
):
    """``parsenet-train data=voc data.root=…`` with nothing about weights: the trunk comes from
    the hub cache (a stand-in VGG16 file there), the log says why, the checkpoint says imagenet."""
    from parsenet.engine.training.assembly import initialised_model

    path, state = torchvision_vgg16
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(IMAGENET_URL).name
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    data = ["data=voc", f"data.root={voc_root}", "data.num_workers=0"]
    model, resolved = initialised_model(compose(*data)["model"], 21, "voc")
    assert resolved["backbone"]["pretrained"] == "imagenet"
    assert resolved["input_norm"] == "torchvision"
    convolutions = model.backbone.convolutions()
    assert torch.equal(convolutions["conv1_1"].weight, state["features.0.weight"])
    assert torch.equal(
        convolutions["fc7"].weight[:, :, 0, 0], state["classifier.3.weight"][::4, ::4]
    )

    run = tmp_path / "run"
    result = run_cli(
        "parsenet-train",
        *data,
        "data.augment.crop_size=32",
        "train.max_iters=1",
        "train.batch_size=1",
        "train.num_overlays=0",
        "train.keep_snapshots=0",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pretrained=auto: torchvision's VGG16 ImageNet weights (imagenet) for data voc" in (
        result.stdout + result.stderr
    )
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["config"]["model"]["backbone"]["pretrained"] == "imagenet"
    assert checkpoint["config"]["model"]["input_norm"] == "torchvision"
    trained, start = (
        checkpoint["model"]["backbone.layers.conv1_1.weight"],
        state["features.0.weight"],
    )
    assert (trained - start).norm() < 0.05 * start.norm()  # one small SGD step from ImageNet's

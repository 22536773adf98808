from pathlib import Path

import pytest
import torch

from parsenet.engine.runtime.checkpoint import load_checkpoint, restore_model, save_checkpoint
from parsenet.engine.training.optim import build_optimizer, parameter_groups, poly_schedule
from parsenet.errors import CheckpointError, ConfigError
from parsenet.models import L2Norm, build_model

TINY = {"width_mult": 0.0625}
SMALL = {"name": "parsenet", "backbone": TINY}
ALL_TAPS = ["conv3_3", "conv4_3", "conv5_3", "fc7", "pool6"]


def test_parameter_groups_follow_the_papers_multipliers():
    model = build_model(SMALL, 5)
    groups = {g["name"]: g for g in parameter_groups(model, lr=0.1, weight_decay=1e-3)}
    expected = {
        "base_weight": (0.1, 1e-3),
        "base_bias": (0.2, 0.0),
        "new_weight": (1.0, 1e-3),
        "new_bias": (2.0, 0.0),
        "scale": (0.1, 1e-3),
    }
    assert set(groups) == set(expected)
    for name, (lr, decay) in expected.items():
        assert groups[name]["lr"] == pytest.approx(lr) and groups[name]["weight_decay"] == decay
    head = model.head
    assert {id(p) for p in groups["new_weight"]["params"]} == {
        id(head.scores["fc7"].weight),
        id(head.scores["pool6_1x1"].weight),
    }
    assert {id(p) for p in groups["scale"]["params"]} == {
        id(head.norms["fc7"].weight),
        id(head.norms["pool6_1x1"].weight),
    }
    assert id(model.upsample.deconv.weight) in {id(p) for p in groups["base_weight"]["params"]}
    counted = sum(len(g["params"]) for g in groups.values())
    assert counted == len(list(model.parameters()))


def ids(params) -> set[int]:
    return {id(p) for p in params}


def expected_membership(model: torch.nn.Module) -> dict[str, set[int]]:
    """The groups by module type: the head's convolutions are new, L2Norm γ are scales, every
    other parameter is base; biases are the parameters named ``bias``."""
    new = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)]
    scales = [m.weight for m in model.modules() if isinstance(m, L2Norm)]
    base = ids(model.parameters()) - ids(p for m in new for p in m.parameters()) - ids(scales)
    biases = {id(p) for name, p in model.named_parameters() if name.endswith(".bias")}
    expected = {
        "new_weight": ids(m.weight for m in new),
        "new_bias": ids(m.bias for m in new),
        "scale": ids(scales),
        "base_weight": base - biases,
        "base_bias": base & biases,
    }
    return {name: members for name, members in expected.items() if members}


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"head": {"taps": ALL_TAPS, "context_bins": [1, 2, 3, 6]}},
        {"head": {"taps": ALL_TAPS, "fusion": "early"}, "upsample": "bilinear"},
        {"backbone": {"arch": "vgg16_fcn32"}, "head": {"taps": ["fc7"], "normalize": False}},
    ],
)
def test_parameter_groups_membership_follows_module_roles(variant):
    model = build_model({**variant, "backbone": {**variant.get("backbone", {}), **TINY}}, 5)
    groups = parameter_groups(model, lr=0.1, weight_decay=1e-3, new_layer_mult=5, bias_mult=3)
    assert {g["name"]: ids(g["params"]) for g in groups} == expected_membership(model)
    expected = {  # lr, lr_mult, weight decay
        "base_weight": (0.1, 1, 1e-3),
        "base_bias": (0.3, 3, 0.0),
        "new_weight": (0.5, 5, 1e-3),
        "new_bias": (1.5, 15, 0.0),
        "scale": (0.1, 1, 1e-3),
    }
    for group in groups:
        settings = (group["lr"], group["lr_mult"], group["weight_decay"])
        assert settings == pytest.approx(expected[group["name"]]), group["name"]


def test_scale_mult_sets_the_l2norm_group_only():
    model = build_model(SMALL, 5)
    plain = {g["name"]: g["lr"] for g in parameter_groups(model, 0.1, 1e-3)}
    groups = {g["name"]: g for g in parameter_groups(model, 0.1, 1e-3, scale_mult=4.0)}
    assert groups["scale"]["lr"] == pytest.approx(0.4) and groups["scale"]["lr_mult"] == 4.0
    assert groups["scale"]["weight_decay"] == 1e-3
    assert {name: g["lr"] for name, g in groups.items() if name != "scale"} == {
        name: lr for name, lr in plain.items() if name != "scale"
    }


def test_a_model_that_declares_no_new_layers_is_all_base():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), L2Norm(4), torch.nn.Conv2d(4, 2, 1))
    groups = {g["name"]: ids(g["params"]) for g in parameter_groups(model, 0.1, 1e-3)}
    assert groups == {
        "base_weight": ids([model[0].weight, model[2].weight]),
        "base_bias": ids([model[0].bias, model[2].bias]),
        "scale": ids([model[1].weight]),
    }


def test_poly_schedule_and_optimizer_from_config():
    model = build_model(SMALL, 5)
    cfg = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 0.9}
    optimizer = build_optimizer(cfg, parameter_groups(model, 0.1, 0.0))
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    schedule = poly_schedule(optimizer, max_iters=10, power=0.9)
    for _ in range(5):
        optimizer.step()
        schedule.step()
    group = next(g for g in optimizer.param_groups if g["name"] == "new_weight")
    assert group["lr"] == pytest.approx(1.0 * 0.5**0.9)
    with pytest.raises(ConfigError, match="optim"):
        build_optimizer({"_target_": "torch.optim.Nope", "_partial_": True}, [])


def _state(model):
    return {
        "model": model.state_dict(),
        "config": {"model": SMALL},
        "iteration": 3,
        "dataset": {
            "name": "synthetic",
            "class_names": list("abcde"),
            "palette": [],
            "ignore_index": 255,
        },
    }


def test_checkpoint_round_trip(tmp_path: Path):
    model = build_model(SMALL, 5)
    path = save_checkpoint(tmp_path / "c" / "last.pt", _state(model))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary left
    checkpoint = load_checkpoint(path)
    assert checkpoint["versions"]["torch"] == torch.__version__
    restored = restore_model(checkpoint, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key])


def test_damaged_and_mismatching_checkpoints(tmp_path: Path):
    model = build_model(SMALL, 5)
    path = save_checkpoint(tmp_path / "last.pt", _state(model))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated.pt cannot be read"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a parsenet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    checkpoint = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="predicts 5 classes .* has 21"):
        restore_model(checkpoint, path, num_classes=21)
    with pytest.raises(CheckpointError, match="holds a parsenet model that does not fit model=fcn"):
        restore_model(checkpoint, path, {**SMALL, "name": "fcn", "head": {"taps": ["fc7"]}})

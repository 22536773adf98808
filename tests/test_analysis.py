"""Figure 2 statistics: feature norms before normalisation and the learned scales."""

import pytest
import torch

from parsenet.analysis import feature_norms, learned_scales
from parsenet.models import build_model


def test_feature_norms_measure_each_layer_before_normalisation():
    torch.manual_seed(0)
    model = build_model({"backbone": {"width_mult": 0.125}, "head": {"taps": ["fc7", "pool6"]}}, 3)
    images = [torch.randn(2, 3, 40, 56), torch.randn(1, 3, 24, 24)]
    norms = feature_norms(model, images)
    assert set(norms) == {"conv4_3", "fc7", "pool6"}
    with torch.no_grad():
        fc7 = [model.backbone.features(batch, ("fc7",))["fc7"] for batch in images]
    per_location = torch.cat([f.pow(2).sum(1).sqrt().flatten() for f in fc7])
    torch.testing.assert_close(norms["fc7"], per_location.mean().item(), rtol=1e-5, atol=0)
    pooled = torch.cat([f.mean(dim=(2, 3)).pow(2).sum(1).sqrt() for f in fc7])
    torch.testing.assert_close(norms["pool6"], pooled.mean().item(), rtol=1e-5, atol=0)
    assert norms["pool6"] < norms["fc7"]  # averaging over the image shrinks the norm


def test_learned_scales_lists_every_l2norm():
    model = build_model({"backbone": {"width_mult": 0.0625}, "head": {"taps": ALL}}, 3)
    with torch.no_grad():
        model.head.norms["conv4_3"].weight[0] = 30.0
    scales = learned_scales(model)
    assert set(scales) == {f"head.norms.{key}" for key in model.head.norms}
    assert scales["head.norms.conv4_3"]["max"] == 30.0
    assert scales["head.norms.fc7"] == {
        "mean": 10.0, "min": 10.0, "max": 10.0, "change": 0.0, "channels": 64
    }  # fmt: skip
    norm = model.head.norms["conv4_3"]
    expected = abs(30.0 - norm.initial_scale) / norm.channels  # one channel moved
    assert scales["head.norms.conv4_3"]["change"] == pytest.approx(expected)


ALL = ["conv3_3", "conv4_3", "conv5_3", "fc7", "pool6"]

import pytest
import torch

from parsenet.errors import ConfigError
from parsenet.models import L2Norm, build_model
from parsenet.models.parsenet import DeconvUpsample

SMALL = {"width_mult": 0.0625}


@pytest.mark.parametrize("name", ["parsenet", "fcn"])
@pytest.mark.parametrize("size", [(375, 500), (333, 257), (1, 1), (17, 9)])
def test_output_is_exactly_input_size(name, size):
    model = build_model({"name": name, **SMALL}, num_classes=21).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 21, *size)


def test_full_width_parameter_count_matches_paper():
    model = build_model({"name": "parsenet"}, num_classes=21)
    count = sum(p.numel() for p in model.parameters())
    assert 20.4e6 < count < 20.6e6, count  # VGG16 convs 14.71 M + fc6 4.72 M + fc7 1.05 M + heads


def test_full_width_trunk_layout():
    model = build_model({"name": "parsenet"}, num_classes=21)
    layers = dict(model.backbone.layers.named_children())
    assert layers["fc6"].weight.shape == (1024, 512, 3, 3)
    assert layers["fc6"].dilation == (12, 12) and layers["conv5_1"].dilation == (2, 2)
    assert layers["pool3"].ceil_mode and layers["pool4"].stride == 1
    assert layers["fc7"].weight.shape == (1024, 1024, 1, 1)
    with torch.no_grad():
        features = model.backbone.eval()(torch.randn(1, 3, 500, 500))
    assert features.shape == (1, 1024, 63, 63)  # Caffe's ceil-mode size at stride 8


def test_fcn_has_no_context_and_no_normalisation():
    fcn = build_model({"name": "fcn", **SMALL}, 5)
    parsenet = build_model({"name": "parsenet", **SMALL}, 5)
    assert not any(isinstance(m, L2Norm) for m in fcn.modules())
    assert sum(isinstance(m, L2Norm) for m in parsenet.modules()) == 2
    assert not hasattr(fcn.head, "context_score")
    trunk = {k for k in fcn.state_dict() if k.startswith("backbone.")}
    assert trunk == {k for k in parsenet.state_dict() if k.startswith("backbone.")}


def test_global_context_changes_every_location():
    """Changing one corner of the input changes the ParseNet scores far away (global pooling)."""
    torch.manual_seed(0)
    model = build_model({"name": "parsenet", **SMALL, "upsample": "bilinear"}, 3).eval()
    head = model.head
    features = torch.rand(1, model.backbone.out_channels, 20, 20)
    moved = features.clone()
    moved[..., :2, :2] += 5.0
    with torch.no_grad():
        far = head(features)[..., -1, -1] - head(moved)[..., -1, -1]
    assert far.abs().max() > 1e-4


@pytest.mark.parametrize("fusion", ["late", "early"])
def test_fusions_and_upsamplings_run(fusion):
    for upsample in ("deconv", "bilinear"):
        model = build_model(
            {"name": "parsenet", **SMALL, "fusion": fusion, "upsample": upsample}, 4
        ).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 45, 61)).shape == (1, 4, 45, 61)
    early = build_model({"name": "parsenet", **SMALL, "fusion": "early"}, 4)
    assert early.head.fused_score.in_channels == 2 * early.backbone.out_channels


def test_deconv_starts_as_bilinear_interpolation():
    up = DeconvUpsample(3)
    scores = torch.ones(1, 3, 6, 6)
    out = up(scores, (48, 48))
    torch.testing.assert_close(out[..., 8:40, 8:40], torch.ones(1, 3, 32, 32))
    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 3, 6, 6)
    out = up(ramp, (48, 48))
    expected = (torch.arange(48.0) - 3.5) / 8  # align_corners=False sampling grid
    torch.testing.assert_close(out[0, 0, 20, 8:40], expected[8:40])


def test_build_model_rejects_bad_settings():
    with pytest.raises(ConfigError, match="model.name"):
        build_model({"name": "unet"}, 21)
    with pytest.raises(ConfigError, match="fusion"):
        build_model({"name": "parsenet", "fusion": "middle"}, 21)

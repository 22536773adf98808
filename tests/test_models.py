import pytest
import torch
import torch.nn.functional as F

from parsenet.errors import ConfigError
from parsenet.models import L2Norm, build_model
from parsenet.models.head import DEFAULT_SCALE_INIT, unpool, upsample_to
from parsenet.models.upsample import DeconvUpsample

TINY = {"width_mult": 0.0625}
ALL_TAPS = ["conv3_3", "conv4_3", "conv5_3", "fc7", "pool6"]
VARIANTS = {
    "parsenet": {},
    "fcn": {"head": {"taps": ["fc7"], "normalize": False}},
    "fcn32s": {"backbone": {"arch": "vgg16_fcn32"}, "head": {"taps": ["fc7"], "normalize": False}},
    "fcn32s_all_taps_early": {
        "backbone": {"arch": "vgg16_fcn32"},
        "head": {"taps": ALL_TAPS, "fusion": "early"},
    },
    "all_taps_pyramid": {"head": {"taps": ALL_TAPS, "context_bins": [1, 2, 3, 6]}},
    "bilinear_no_norm": {"head": {"normalize": False}, "upsample": "bilinear"},
}


def tiny(variant: dict) -> dict:
    return {**variant, "backbone": {**variant.get("backbone", {}), **TINY}}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("size", [(375, 500), (33, 257), (1, 1), (17, 9)])
def test_output_is_exactly_input_size(variant, size):
    model = build_model(tiny(VARIANTS[variant]), num_classes=21).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 21, *size)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_full_width_parameter_counts():
    # Released ParseNet: VGG16 convs 14.71 M + fc6 4.72 M + fc7 1.05 M + two heads + deconv.
    assert count(build_model({}, num_classes=21)) == 20_534_399
    # FCN-32s VGG16: torchvision's VGG16 (138,357,544) without fc8 (4,097,000), plus the 4096→21
    # score layer (86,037) and the 21-group 64×64 deconvolution (86,037): the FCN paper's 134 M.
    fcn32s = build_model(VARIANTS["fcn32s"], num_classes=21)
    assert count(fcn32s) == 138_357_544 - 4_097_000 + 86_037 + 86_037


def test_full_width_trunk_layouts():
    reduced = build_model({}, num_classes=21).backbone
    layers = reduced.convolutions()
    assert layers["fc6"].weight.shape == (1024, 512, 3, 3)
    assert layers["fc6"].dilation == (12, 12) and layers["conv5_1"].dilation == (2, 2)
    assert layers["fc7"].weight.shape == (1024, 1024, 1, 1)
    pools = dict(reduced.layers.named_children())
    assert pools["pool3"].ceil_mode and pools["pool4"].stride == 1
    fcn32 = build_model(VARIANTS["fcn32s"], num_classes=21).backbone
    assert fcn32.convolutions()["fc6"].weight.shape == (4096, 512, 7, 7)
    assert fcn32.convolutions()["conv5_1"].dilation == (1, 1)
    with torch.no_grad():
        image = torch.randn(1, 3, 500, 500)
        assert reduced.eval()(image).shape == (1, 1024, 63, 63)  # Caffe's ceil-mode size
        assert fcn32.eval()(image).shape == (1, 4096, 16, 16)


def test_taps_have_their_strides():
    model = build_model(tiny({"backbone": {"arch": "vgg16_fcn32"}}), 3).eval()
    trunk = model.backbone
    assert trunk.tap_strides == {"conv3_3": 4, "conv4_3": 8, "conv5_3": 16, "fc7": 32}
    with torch.no_grad():
        features = trunk.features(torch.randn(1, 3, 100, 70), ("conv3_3", "conv5_3", "fc7"))
    assert {k: tuple(v.shape[-2:]) for k, v in features.items()} == {
        "conv3_3": (25, 18),
        "conv5_3": (7, 5),
        "fc7": (4, 3),
    }


@pytest.mark.parametrize("arch", ["reduced_vgg16", "vgg16_fcn32"])
def test_taps_are_the_outputs_of_named_layers(arch):
    trunk = build_model(tiny({"backbone": {"arch": arch}}), 3).backbone.eval()
    assert trunk.tap_outputs == {
        "conv3_3": "relu3_3",
        "conv4_3": "relu4_3",
        "conv5_3": "relu5_3",
        "fc7": "drop7",
    }
    image = torch.randn(1, 3, 40, 36)
    with torch.no_grad():
        features = trunk.features(image, tuple(trunk.tap_outputs))
        x, by_layer = image, {}
        for name, layer in trunk.layers.named_children():
            x = by_layer[name] = layer(x)
    assert list(features) == list(trunk.tap_outputs)  # network order
    for tap, output in trunk.tap_outputs.items():
        torch.testing.assert_close(features[tap], by_layer[output], rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot tap"):
        trunk.features(image, ("conv2_2",))


def test_unset_scales_take_the_heads_defaults():
    model = build_model(tiny({"head": {"taps": ALL_TAPS}}), 5)
    scales = {key: norm.weight.unique().tolist() for key, norm in model.head.norms.items()}
    assert scales == {
        **{tap: [DEFAULT_SCALE_INIT[tap]] for tap in ALL_TAPS if tap != "pool6"},
        "pool6_1x1": [DEFAULT_SCALE_INIT["pool6"]],
    }
    shared = build_model(tiny({"head": {"taps": ALL_TAPS, "scale_init": 3}}), 5)
    assert all(norm.weight.eq(3).all() for norm in shared.head.norms.values())


def test_new_layers_are_the_score_convolutions():
    model = build_model(tiny({"head": {"taps": ALL_TAPS, "context_bins": [1, 2]}}), 5)
    assert set(model.new_layers()) == set(model.head.scores.values())
    assert len(model.new_layers()) == len(ALL_TAPS) + 1


def test_normalisation_options():
    plain = build_model(tiny(VARIANTS["fcn"]), 5)
    assert not any(isinstance(m, L2Norm) for m in plain.modules())
    model = build_model(
        tiny({"head": {"taps": ["conv4_3", "fc7", "pool6"], "scale_init": {"conv4_3": 20}}}), 5
    )
    norms = model.head.norms
    assert set(norms) == {"conv4_3", "fc7", "pool6_1x1"}
    assert norms["conv4_3"].weight.eq(20).all() and norms["pool6_1x1"].weight.eq(10).all()
    assert all(isinstance(norm.weight, torch.nn.Parameter) for norm in norms.values())
    assert model.head.context_dropout.p == 0.3
    assert build_model(tiny({"head": {"context_dropout": 0.1}}), 5).head.context_dropout.p == 0.1
    fixed = build_model(tiny({"head": {"learn_scale": False, "channel_shared": True}}), 5)
    for norm in fixed.head.norms.values():
        assert norm.weight.numel() == 1 and not isinstance(norm.weight, torch.nn.Parameter)
    assert "head.norms.fc7.weight" in fixed.state_dict()  # fixed γ still travels in checkpoints


def test_global_context_changes_every_location():
    """Changing one corner of the input changes the ParseNet scores far away (global pooling)."""
    torch.manual_seed(0)
    model = build_model(tiny({}), 3).eval()
    features = {"fc7": torch.rand(1, model.backbone.out_channels, 20, 20)}
    moved = {"fc7": features["fc7"].clone()}
    moved["fc7"][..., :2, :2] += 5.0
    fcn = build_model(tiny(VARIANTS["fcn"]), 3).eval()
    with torch.no_grad():
        far = model.head(features)[..., -1, -1] - model.head(moved)[..., -1, -1]
        local_only = fcn.head(features)[..., -1, -1] - fcn.head(moved)[..., -1, -1]
    assert far.abs().max() > 1e-4
    assert local_only.abs().max() == 0


@pytest.mark.parametrize("arch", ["reduced_vgg16", "vgg16_fcn32"])
def test_early_and_late_fusion_are_the_same_function_class(arch):
    """A concatenated 1×1 classifier equals per-tap classifiers summed (resized and unpooled
    alike): copying the late model's weights into the early one gives the same scores."""
    torch.manual_seed(0)
    head = {"taps": ALL_TAPS, "context_bins": [1, 3], "context_dropout": 0.0}
    late = build_model(tiny({"backbone": {"arch": arch}, "head": head}), 4).eval()
    early = build_model(
        tiny({"backbone": {"arch": arch}, "head": {**head, "fusion": "early"}}), 4
    ).eval()
    early.load_state_dict(late.state_dict(), strict=False)
    fused = early.head.scores["fused"]
    keys = list(late.head.norms)  # the concatenation order: spatial taps, then context levels
    with torch.no_grad():
        fused.weight.copy_(torch.cat([late.head.scores[k].weight for k in keys], dim=1))
        fused.bias.copy_(sum(late.head.scores[k].bias for k in keys))
        images = torch.randn(2, 3, 61, 45)
        torch.testing.assert_close(early(images), late(images), rtol=1e-4, atol=1e-4)
    assert fused.in_channels == sum(late.head.scores[k].in_channels for k in keys)


def test_upsample_to_aligns_pixel_centres():
    # A map at stride 8 whose value is the input coordinate of each pixel centre, 8y + 3.5,
    # upsampled to stride 2 must read 2y + 0.5 away from the borders.
    coarse = (8 * torch.arange(6.0) + 3.5).view(1, 1, 1, 6).expand(1, 1, 6, 6)
    fine = upsample_to(coarse, 4, torch.Size((23, 23)))
    assert fine.shape[-2:] == (23, 23)
    expected = 2 * torch.arange(23.0) + 0.5
    torch.testing.assert_close(fine[0, 0, 10, 2:21], expected[2:21])


def test_unpool_replicates_bins():
    bins = torch.arange(4.0).view(1, 1, 2, 2)
    assert unpool(bins, torch.Size((4, 6))).tolist() == [
        [[[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3], [2, 2, 2, 3, 3, 3]]]
    ]
    model = build_model(tiny({"head": {"context_bins": [1, 2, 3, 6]}}), 4)
    assert set(model.head.scores) == {"fc7", "pool6_1x1", "pool6_2x2", "pool6_3x3", "pool6_6x6"}


def test_pyramid_context_pools_each_grid():
    model = build_model(tiny({"head": {"context_bins": [2], "normalize": False}}), 4).eval()
    features = torch.rand(1, model.backbone.out_channels, 8, 8)
    with torch.no_grad():
        context = model.head.context(features, 2)
    torch.testing.assert_close(context, F.avg_pool2d(features, 4))


def test_deconv_starts_as_bilinear_interpolation():
    up = DeconvUpsample(3)
    scores = torch.ones(1, 3, 6, 6)
    out = up(scores, (48, 48))
    torch.testing.assert_close(out[..., 8:40, 8:40], torch.ones(1, 3, 32, 32))
    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 3, 6, 6)
    out = up(ramp, (48, 48))
    expected = (torch.arange(48.0) - 3.5) / 8  # align_corners=False sampling grid
    torch.testing.assert_close(out[0, 0, 20, 8:40], expected[8:40])


def transposed_convolution(up: DeconvUpsample, scores: torch.Tensor, size) -> torch.Tensor:
    """What DeconvUpsample computed before the phase formulation: ConvTranspose2d, then crop."""
    deconv = up.deconv
    full = F.conv_transpose2d(
        scores, deconv.weight, deconv.bias, deconv.stride, deconv.padding, groups=deconv.groups
    )
    return full[..., : size[0], : size[1]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("stride", [4, 8, 16, 32])
def test_phase_deconvolution_equals_the_transposed_convolution(stride, layout, dtype):
    """Outputs and all three gradients (scores, kernel, bias) as ConvTranspose2d gives them:
    to 1e-12 in float64 (the same sums), to float32 rounding in float32 (the kernel and bias
    gradients sum thousands of pixels, in another order); learned (random) kernels, crops to
    any size, both layouts."""
    torch.manual_seed(stride)
    up = DeconvUpsample(3, stride).to(dtype=dtype, memory_format=layout)
    with torch.no_grad():
        up.deconv.weight.normal_()
        up.deconv.bias.normal_()
    exact = dtype == torch.float64
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if exact else {}
    summed = tolerance if exact else {"rtol": 1e-4, "atol": 1e-4}
    for height, width, size in [
        (5, 7, (5 * stride, 7 * stride)),
        (6, 4, (6 * stride - 3, 3 * stride + 1)),
    ]:
        scores = torch.randn(2, 3, height, width, dtype=dtype).contiguous(memory_format=layout)
        scores.requires_grad_()
        got, expected = up(scores, size), transposed_convolution(up, scores, size)
        assert got.shape == (2, 3, *size)
        torch.testing.assert_close(got, expected, **tolerance)
        gradient = torch.randn_like(expected)
        inputs = (scores, up.deconv.weight, up.deconv.bias)
        for mine, theirs in zip(
            torch.autograd.grad(got, inputs, gradient),
            torch.autograd.grad(expected, inputs, gradient),
            strict=True,
        ):
            torch.testing.assert_close(mine, theirs, **summed)
    with pytest.raises(ValueError, match=r"upsampled scores \(8, 8\) smaller than \(9, 8\)"):
        DeconvUpsample(3, 8)(torch.zeros(1, 3, 1, 1), (9, 8))


def test_phase_deconvolution_keeps_the_parameters_and_counts_as_a_deconvolution():
    up = DeconvUpsample(21, 8)
    state = up.state_dict()
    assert {key: tuple(value.shape) for key, value in state.items()} == {
        "deconv.weight": (21, 1, 16, 16),
        "deconv.bias": (21,),
    }
    assert isinstance(up.deconv, torch.nn.ConvTranspose2d)  # FLOP counts, Caffe conversion


def test_score_layers_use_caffes_xavier_fill():
    model = build_model({}, 21)
    weight = model.head.scores["fc7"].weight
    bound = (3 / 1024) ** 0.5  # Caffe's xavier: fan-in only
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
    assert model.head.scores["fc7"].bias.eq(0).all()


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"backbone": {"arch": "resnet50"}}, "backbone.arch"),
        ({"backbone": {"widht_mult": 0.5}}, "model.backbone.widht_mult is not a setting"),
        ({"head": {"taps": ["fc8"]}}, "head.taps"),
        ({"head": {"taps": ["pool6"]}}, "needs a spatial layer"),
        ({"head": {"taps": ["fc7", "fc7"]}}, "distinct"),
        ({"head": {"context_bins": [0]}}, "context_bins"),
        ({"head": {"fusion": "middle"}}, "head.fusion"),
        ({"upsample": "nearest"}, "upsample"),
    ],
)
def test_build_model_rejects_bad_settings(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, 21)

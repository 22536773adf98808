"""``parsenet-convert caffe``: the caffemodel reader, the layer mapping, and the converted models
against an independent Caffe-style forward pass.

The caffemodels are written here in the real protobuf wire format by a small encoder (both the
``layer`` and the legacy ``layers`` field, packed and unpacked floats, ``shape`` and legacy
num/channels/height/width dims), from known random tensors of the released nets' shapes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_one_line_error, compose_train, run_cli
from PIL import Image
from torch import nn

from parsenet.convert import CaffeModelError, read_caffemodel
from parsenet.convert.caffe_layers import load_caffe_weights
from parsenet.data.normalization import get_normalization
from parsenet.engine.runtime.checkpoint import load_checkpoint, restore_model
from parsenet.engine.training.trainer import Trainer

# The released prototxt's mean_value (BGR) and the layers of VGG_VOC2012ext / fc_reduced, written
# out here (not taken from the model code) so the comparison is independent.
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
TRUNK = [  # name, out, in, kernel, pad, dilation, pool after it (kernel, stride, pad)
    ("conv1_1", 64, 3, 3, 1, 1, None),
    ("conv1_2", 64, 64, 3, 1, 1, (2, 2, 0)),
    ("conv2_1", 128, 64, 3, 1, 1, None),
    ("conv2_2", 128, 128, 3, 1, 1, (2, 2, 0)),
    ("conv3_1", 256, 128, 3, 1, 1, None),
    ("conv3_2", 256, 256, 3, 1, 1, None),
    ("conv3_3", 256, 256, 3, 1, 1, (2, 2, 0)),
    ("conv4_1", 512, 256, 3, 1, 1, None),
    ("conv4_2", 512, 512, 3, 1, 1, None),
    ("conv4_3", 512, 512, 3, 1, 1, (3, 1, 1)),
    ("conv5_1", 512, 512, 3, 2, 2, None),
    ("conv5_2", 512, 512, 3, 2, 2, None),
    ("conv5_3", 512, 512, 3, 2, 2, (3, 1, 1)),
    ("fc6", 1024, 512, 3, 12, 12, None),
    ("fc7", 1024, 1024, 1, 0, 1, None),
]
RELEASED_PARAMETERS = 20_534_399
V1_CONVOLUTION, V1_DECONVOLUTION, V1_RELU = 4, 39, 18


# --- a minimal protobuf encoder for NetParameter --------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def delimited(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def unpacked(field: int, values: np.ndarray, dtype: str) -> bytes:
    """Each value as its own field (wire type 5 for floats, 1 for doubles)."""
    raw = values.astype(dtype).reshape(-1, 1).view(np.uint8)
    tag = np.frombuffer(key(field, 5 if dtype == "<f4" else 1), np.uint8)
    return np.hstack([np.broadcast_to(tag, (len(raw), 1)), raw]).tobytes()


def encode_blob(
    array: np.ndarray, legacy: bool = False, packed: bool = True, double=False
) -> bytes:
    """A BlobProto: ``shape`` (7) or legacy num/channels/height/width (1–4); data (5) or
    double_data (8), packed or one field per value."""
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        out = b"".join(
            key(field, 0) + varint(size) for field, size in zip((1, 2, 3, 4), dims, strict=True)
        )
    else:
        out = delimited(7, delimited(1, b"".join(varint(size) for size in array.shape)))
    field, dtype = (8, "<f8") if double else (5, "<f4")
    if packed:
        return out + delimited(field, array.astype(dtype).tobytes())
    return out + unpacked(field, array, dtype)


def encode_layer(name: str, blobs: list[bytes], v1: bool = False, v1_type=V1_CONVOLUTION) -> bytes:
    """A layer as NetParameter field 100 (LayerParameter) or 2 (V1LayerParameter), with
    bottom/top and a parameter message that the reader must skip."""
    if v1:  # bottom 2, top 3, name 4, type 5 (enum), blobs 6, convolution_param 10
        body = delimited(2, b"data") + delimited(3, name.encode()) + delimited(4, name.encode())
        body += key(5, 0) + varint(v1_type) + b"".join(delimited(6, blob) for blob in blobs)
        return delimited(2, body + delimited(10, key(1, 0) + varint(7)))
    # name 1, type 2, bottom 3, top 4, blobs 7, convolution_param 106, a fixed64 field for skipping
    body = delimited(1, name.encode()) + delimited(2, b"Convolution") + delimited(3, b"data")
    body += delimited(4, name.encode()) + b"".join(delimited(7, blob) for blob in blobs)
    return delimited(100, body + delimited(106, key(1, 0) + varint(7)) + key(99, 1) + bytes(8))


def encode_net(layers: list[bytes], name: str = "VGG_VOC2012ext") -> bytes:
    return delimited(1, name.encode()) + b"".join(layers)


# --- the released nets' blobs ------------------------------------------------------------------


def random_trunk(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """He-scaled random weights and small biases of the reduced VGG16 trunk."""
    blobs = {}
    for name, out, inp, kernel, *_ in TRUNK:
        std = math.sqrt(2.0 / (inp * kernel * kernel))
        weight = rng.standard_normal((out, inp, kernel, kernel), np.float32) * np.float32(std)
        blobs[name] = [weight, rng.normal(0, 0.05, out).astype(np.float32)]
    return blobs


def random_parsenet(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Blobs of every weighted layer of the released ParseNet, with its shapes."""
    blobs = random_trunk(rng)
    for norm in ("fc7_norm", "pool6_1x1_norm"):
        blobs[norm] = [rng.uniform(5, 15, 1024).astype(np.float32)]
    for score in ("fc7_norm_score21", "pool6_1x1_norm_score21"):
        weight = rng.standard_normal((21, 1024, 1, 1), np.float32) * np.float32(0.1)
        blobs[score] = [weight, rng.normal(0, 0.1, 21).astype(np.float32)]
    # Not bilinear (not symmetric), so a flipped kernel would show.
    blobs["upscore21"] = [
        rng.uniform(0.5, 1.5, (21, 1, 16, 16)).astype(np.float32),
        rng.normal(0, 0.1, 21).astype(np.float32),
    ]
    return blobs


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> tuple[dict[str, list[np.ndarray]], dict[str, bytes], Path]:
    """Blobs of the released ParseNet, each layer encoded (the trunk with ``shape``, the
    Normalize and score layers with legacy 4-D dims, upscore21 as a V1 Deconvolution) and the
    whole file."""
    blobs = random_parsenet(np.random.default_rng(0))
    head = ("fc7_norm", "pool6_1x1_norm", "fc7_norm_score21", "pool6_1x1_norm_score21")
    layers = {
        name: encode_layer(name, [encode_blob(blob, legacy=name in head) for blob in arrays])
        for name, arrays in blobs.items()
    }
    layers["upscore21"] = encode_layer(
        "upscore21", [encode_blob(b) for b in blobs["upscore21"]], v1=True, v1_type=V1_DECONVOLUTION
    )
    path = tmp_path_factory.mktemp("caffe") / "VGG_VOC2012ext.caffemodel"
    path.write_bytes(encode_net(list(layers.values())))
    return blobs, layers, path


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory) -> Path:
    """The released net converted by the real CLI (arch chosen automatically)."""
    out = tmp_path_factory.mktemp("converted") / "parsenet_voc12.pt"
    result = run_cli("convert", "caffe", str(released[2]), "--out", str(out), check=True)
    assert f"{RELEASED_PARAMETERS:,} parameters" in result.stdout, result.stdout
    assert "arch=parsenet_voc" in result.stdout and "not the released" in result.stdout
    return out


# --- an independent Caffe-style forward pass ----------------------------------------------------


def caffe_max_pool(x: torch.Tensor, kernel: int, stride: int, pad: int) -> torch.Tensor:
    """Caffe's MAX pooling: ceil((H + 2p − k) / s) + 1 outputs (minus one if the last window would
    start in the padding), windows clipped to the image (padding never wins)."""
    size = x.shape[-2:]
    outs = [math.ceil((n + 2 * pad - kernel) / stride) + 1 for n in size]
    outs = [
        o - 1 if pad and (o - 1) * stride >= n + pad else o for o, n in zip(outs, size, strict=True)
    ]
    extra = [(o - 1) * stride + kernel - n - pad for o, n in zip(outs, size, strict=True)]
    padded = F.pad(x, (pad, extra[1], pad, extra[0]), value=-math.inf)
    return F.max_pool2d(padded, kernel, stride)


def caffe_deconvolution(x: torch.Tensor, weight: torch.Tensor, bias, stride: int, pad: int):
    """Caffe's per-class Deconvolution (group = channels): input pixel i spreads its kernel over
    output pixels stride·i − pad + k."""
    channels, _, kernel, _ = weight.shape
    height, width = x.shape[-2:]
    canvas = x.new_zeros(
        x.shape[0], channels, (height - 1) * stride + kernel, (width - 1) * stride + kernel
    )
    for ky in range(kernel):
        for kx in range(kernel):
            tap = weight[:, 0, ky, kx].view(1, -1, 1, 1)
            rows = slice(ky, ky + (height - 1) * stride + 1, stride)
            cols = slice(kx, kx + (width - 1) * stride + 1, stride)
            canvas[:, :, rows, cols] += x * tap
    out = canvas[:, :, pad : canvas.shape[-2] - pad, pad : canvas.shape[-1] - pad]
    return out + bias.view(1, -1, 1, 1)


def caffe_normalize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Normalize with across_spatial false, channel_shared false: eps 1e-10 inside the root."""
    return x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-10) * scale.view(1, -1, 1, 1)


def caffe_forward(blobs: dict[str, list[np.ndarray]], image: np.ndarray) -> torch.Tensor:
    """The released ParseNet at test time, in float64, from an RGB uint8 image (data layer: BGR
    minus the mean, no scaling)."""
    weights = {
        name: [torch.from_numpy(b).double() for b in arrays] for name, arrays in blobs.items()
    }
    bgr = image[..., ::-1].astype(np.float64) - np.array(CAFFE_MEAN_BGR)
    x = torch.from_numpy(bgr.transpose(2, 0, 1).copy()).unsqueeze(0)
    height, width = image.shape[:2]
    for name, _, _, _, pad, dilation, pool in TRUNK:
        x = F.relu(F.conv2d(x, *weights[name], padding=pad, dilation=dilation))
        if pool is not None:
            x = caffe_max_pool(x, *pool)
    local = caffe_normalize(x, weights["fc7_norm"][0])
    context = caffe_normalize(x.mean(dim=(2, 3), keepdim=True), weights["pool6_1x1_norm"][0])
    score = F.conv2d(local, *weights["fc7_norm_score21"])
    score = score + F.conv2d(context, *weights["pool6_1x1_norm_score21"]).expand_as(score)
    upscored = caffe_deconvolution(score, *weights["upscore21"], stride=8, pad=4)
    return upscored[:, :, :height, :width]  # Crop against data: offset 0


# --- tests ---------------------------------------------------------------------------------------


def test_reader_decodes_both_layer_fields_packed_and_unpacked(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a_weight, a_bias = (
        rng.standard_normal((2, 3, 3, 3), np.float32),
        rng.standard_normal(2, np.float32),
    )
    b_weight, b_bias = (
        rng.standard_normal((4, 2, 1, 1), np.float32),
        rng.standard_normal(4, np.float32),
    )
    scale = rng.standard_normal(5)  # float64, stored as double_data
    deconv = rng.standard_normal((3, 1, 4, 4), np.float32)
    layers = [
        encode_layer("conv_a", [encode_blob(a_weight), encode_blob(a_bias, packed=False)]),
        encode_layer(
            "conv_b",
            [encode_blob(b_weight, legacy=True, packed=False), encode_blob(b_bias, legacy=True)],
            v1=True,
        ),
        encode_layer("relu_b", [], v1=True, v1_type=V1_RELU),
        encode_layer("norm", [encode_blob(scale, double=True, packed=False)]),
        encode_layer("up", [encode_blob(deconv, legacy=True, double=True)], v1=True, v1_type=39),
    ]
    path = tmp_path / "tiny.caffemodel"
    path.write_bytes(encode_net(layers, name="tiny"))

    net = read_caffemodel(path)

    assert net.name == "tiny"
    assert [(layer.name, layer.type) for layer in net.layers] == [
        ("conv_a", "Convolution"),
        ("conv_b", "Convolution"),
        ("relu_b", "V1 type 18"),
        ("norm", "Convolution"),
        ("up", "Deconvolution"),
    ]
    conv_a, conv_b, _, norm, up = net.layers
    np.testing.assert_array_equal(conv_a.blobs[0], a_weight)
    np.testing.assert_array_equal(conv_a.blobs[1], a_bias)
    np.testing.assert_array_equal(conv_b.blobs[0], b_weight)
    assert conv_b.blobs[1].shape == (1, 1, 1, 4)  # legacy dims as Caffe stores them
    np.testing.assert_array_equal(conv_b.blobs[1].reshape(-1), b_bias)
    np.testing.assert_array_equal(norm.blobs[0], scale.astype(np.float32))
    np.testing.assert_array_equal(up.blobs[0], deconv)
    assert set(net.weighted_layers()) == {"conv_a", "conv_b", "norm", "up"}
    path.write_bytes(encode_net([*layers, layers[0]]))
    with pytest.raises(CaffeModelError, match="several layers with weights named conv_a"):
        read_caffemodel(path)
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(CaffeModelError, match="HDF5"):
        read_caffemodel(tmp_path / "weights.h5")


def test_mapping_copies_exactly_reports_unused_and_fills_absent_bias(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    weight, bias = rng.standard_normal((4, 2, 3, 3), np.float32), rng.standard_normal(4, np.float32)
    scales = rng.standard_normal(4, np.float32)
    layers = [
        encode_layer(
            "conv", [encode_blob(weight, legacy=True), encode_blob(bias, legacy=True)], v1=True
        ),
        encode_layer("nobias", [encode_blob(weight)]),  # bias_term: false
        encode_layer("extra", [encode_blob(scales)]),
    ]
    path = tmp_path / "map.caffemodel"
    path.write_bytes(encode_net(layers))
    module = nn.ModuleDict({"a": nn.Conv2d(2, 4, 3), "b": nn.Conv2d(2, 4, 3)})

    report = load_caffe_weights(
        module, {"conv": "a", "nobias": "b"}, read_caffemodel(path), "parsenet_voc", str(path)
    )

    assert torch.equal(module["a"].weight, torch.from_numpy(weight))
    assert torch.equal(module["a"].bias, torch.from_numpy(bias))
    assert torch.equal(module["b"].weight, torch.from_numpy(weight))
    assert torch.equal(module["b"].bias, torch.zeros(4))
    assert report.layers == ["conv", "nobias"] and report.zero_biases == ["nobias"]
    assert [layer.name for layer in report.unused] == ["extra"]
    with pytest.raises(CaffeModelError, match="no Caffe layer maps to b.bias, b.weight"):
        load_caffe_weights(module, {"conv": "a"}, read_caffemodel(path), "parsenet_voc", "x")


def test_released_net_converts_exactly(released, converted: Path) -> None:
    blobs = released[0]
    assert sum(b.size for arrays in blobs.values() for b in arrays) == RELEASED_PARAMETERS
    checkpoint = load_checkpoint(converted)
    state = checkpoint["model"]
    ours = {
        **{name: f"backbone.layers.{name}" for name, *_ in TRUNK},
        "fc7_norm": "head.norms.fc7",
        "pool6_1x1_norm": "head.norms.pool6_1x1",
        "fc7_norm_score21": "head.scores.fc7",
        "pool6_1x1_norm_score21": "head.scores.pool6_1x1",
        "upscore21": "upsample.deconv",
    }
    filled = []
    for caffe_name, module in ours.items():
        for suffix, blob in zip(("weight", "bias"), blobs[caffe_name], strict=False):
            expected = torch.from_numpy(blob)
            assert torch.equal(state[f"{module}.{suffix}"], expected), caffe_name
            filled.append(f"{module}.{suffix}")
    assert sorted(filled) == sorted(state)
    assert sum(t.numel() for t in state.values()) == RELEASED_PARAMETERS
    assert checkpoint["config"]["model"]["input_norm"] == "caffe"
    assert checkpoint["config"]["model"]["name"] == "parsenet_vgg16-os8_voc12aug"
    assert (
        checkpoint["dataset"]["name"] == "voc" and len(checkpoint["dataset"]["class_names"]) == 21
    )
    source = checkpoint["converted_from"]
    assert source["file"] == "VGG_VOC2012ext.caffemodel" and source["released"] is False


def test_converted_model_matches_caffe_forward(released, converted: Path) -> None:
    checkpoint = load_checkpoint(converted)
    model = restore_model(checkpoint, converted).eval()
    image = np.random.default_rng(3).integers(
        0, 256, (67, 45, 3), dtype=np.uint8
    )  # odd: ceil pools
    normalise = get_normalization(checkpoint["config"]["model"]["input_norm"])

    with torch.no_grad():
        logits = model(normalise(image).unsqueeze(0)).double()
    reference = caffe_forward(released[0], image)

    assert logits.shape == reference.shape == (1, 21, 67, 45)
    scale = reference.abs().max().item()
    difference = (logits - reference).abs().max().item()
    assert scale > 1 and difference < 1e-4 * scale, (difference, scale)
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() > 0.999


def test_reduced_vgg16_initialises_trunk_with_caffe_inputs(released, tmp_path: Path) -> None:
    trunk = {name: released[0][name] for name, *_ in TRUNK}
    fc8 = [np.ones((1000, 1024, 1, 1), np.float32), np.arange(1000, dtype=np.float32)]
    layers = [  # the 2015 file: legacy V1 layers with 4-D dims; conv1_1 with unpacked floats
        encode_layer(
            name,
            [encode_blob(b, legacy=True, packed=name != "conv1_1") for b in arrays],
            v1=True,
        )
        for name, arrays in {**trunk, "fc8": fc8}.items()
    ]
    model_path = tmp_path / "VGG_ILSVRC_16_layers_fc_reduced.caffemodel"
    model_path.write_bytes(encode_net(layers, name="VGG_ILSVRC_16_layers"))
    out = tmp_path / "vgg16_reducedfc_caffe.pth"

    result = run_cli("convert", "caffe", str(model_path), "--out", str(out), check=True)

    assert "arch=reduced_vgg16" in result.stdout
    assert "fc8 (1000×1024×1×1, 1×1×1×1000)" in result.stdout
    cfg = compose_train(
        tmp_path, "model.backbone.width_mult=1.0", f"model.backbone.pretrained={out}"
    )
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.cfg["model"]["input_norm"] == "caffe"
    for name, conv in trainer.model.backbone.convolutions().items():
        assert torch.equal(conv.weight, torch.from_numpy(trunk[name][0])), name
        assert torch.equal(conv.bias, torch.from_numpy(trunk[name][1])), name


def test_eval_cli_on_converted_checkpoint(
    released, converted: Path, voc_root: Path, tmp_path
) -> None:
    run_dir = tmp_path / "eval"
    overrides = [f"checkpoint={converted}", "data=voc", f"data.root={voc_root}"]
    overrides += ["data.num_workers=0", "device=cpu", f"hydra.run.dir={run_dir}"]

    run_cli("eval", *overrides, check=True)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["mode"] == "whole"
    base = voc_root / "VOCdevkit" / "VOC2012"
    confusion = np.zeros((21, 21), np.int64)
    for sample in (base / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        image = np.asarray(Image.open(base / "JPEGImages" / f"{sample}.jpg").convert("RGB"))
        label = np.asarray(Image.open(base / "SegmentationClass" / f"{sample}.png"))
        predicted = caffe_forward(released[0], image).argmax(1)[0].numpy()
        valid = label != 255
        confusion += np.bincount(
            label[valid].astype(np.int64) * 21 + predicted[valid], minlength=21 * 21
        ).reshape(21, 21)
    assert (confusion.sum(0) > 0).sum() > 3  # the random model predicts several classes
    saved = np.load(run_dir / "confusion.npy")
    assert np.abs(saved - confusion).sum() <= 2  # at most one pixel on a near-tie differs
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    expected = np.mean(np.diag(confusion)[union > 0] / union[union > 0])
    assert metrics["mIoU"] == pytest.approx(expected, abs=1e-3)


def without(layers: dict[str, bytes], name: str) -> bytes:
    return encode_net([encoded for layer, encoded in layers.items() if layer != name])


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("truncated", ("VGG_VOC2012ext.caffemodel", "truncated")),
        ("missing_layer", ("VGG_VOC2012ext.caffemodel", "no layer pool6_1x1_norm")),
        ("wrong_shape", ("fc7_norm_score21", "20×1024×1×1", "21×1024×1×1")),
        ("unknown_arch", ("--arch", "resnet50", "parsenet_voc", "reduced_vgg16")),
        ("missing_file", ("VGG_VOC2012ext.caffemodel: no such file",)),
        ("no_out", ("--out",)),
        ("out_is_a_folder", ("--out", "is a folder", "parsenet_voc12.pt")),
        ("old_style_option", ("--out",)),
        ("unknown_format", ("'onnx'", "caffe")),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(
    released, tmp_path: Path, case, fragments
) -> None:
    blobs, layers, path = released
    model_path, out = tmp_path / "VGG_VOC2012ext.caffemodel", tmp_path / "out" / "model.pt"
    arguments = ["caffe", str(model_path), "--out", str(out)]
    if case == "truncated":
        model_path.write_bytes(path.read_bytes()[:3_000_000])  # cut inside conv3
    elif case == "missing_layer":
        model_path.write_bytes(without(layers, "pool6_1x1_norm"))
    elif case == "wrong_shape":
        twenty = [
            encode_blob(blobs["fc7_norm_score21"][0][:20]),
            encode_blob(blobs["fc7_norm_score21"][1][:20]),
        ]
        model_path.write_bytes(
            without(layers, "fc7_norm_score21") + encode_layer("fc7_norm_score21", twenty)
        )
    elif case == "unknown_arch":
        arguments = ["caffe", str(path), "--out", str(out), "--arch", "resnet50"]
    elif case == "no_out":
        arguments = ["caffe", str(path)]
    elif case == "out_is_a_folder":
        out.parent.mkdir()
        arguments = ["caffe", str(path), "--out", str(out.parent)]
    elif case == "old_style_option":
        arguments = ["caffe", str(path), f"out={out}"]
    elif case == "unknown_format":
        arguments = ["onnx", str(path), "--out", str(out)]

    result = run_cli("convert", *arguments)

    assert_one_line_error(result, *fragments)
    assert not out.parent.exists() or not any(out.parent.iterdir())

"""ImageNet initialisation of the trunks: the VGG16s with the paper's fc6/fc7 net surgery, and the
ResNet and MobileNetV3 trunks from torchvision's weights enums.

Sources for ``model.backbone.pretrained``:

- ``imagenet``: torchvision's ImageNet weights of the trunk (VGG16; ResNet-50/101 and
  MobileNetV3-Large ``IMAGENET1K_V1``, the starts of torchvision's own segmentation models),
  downloaded into the torch hub cache;
- for the ResNet and MobileNetV3 trunks, a path to the torchvision classifier's state dict;
- a path to a torchvision VGG16 state dict (``features.*`` / ``classifier.*`` keys);
- a path to a Caffe-converted reduced VGG16 (``vgg16_reducedfc.pth`` of the SSD ports: the
  ``nn.ModuleList`` keys ``0.weight`` … ``33.weight``, fc6 already 1024×512×3×3; also what
  ``parsenet-convert caffe VGG_ILSVRC_16_layers_fc_reduced.caffemodel`` writes);
- ``none``: random initialisation;
- ``auto`` (the default): ``imagenet`` for real data at full width, ``none`` for the synthetic
  data and for ``width_mult`` ≠ 1 (no weights exist at other widths); see
  :func:`resolve_pretrained`, which the trainer calls with the data's name.

Each source implies the input convention its weights were trained with (``torchvision``: RGB in
[0, 1] with ImageNet mean/std; ``caffe``: BGR 0–255 minus the mean pixel), which the trainer stores
in the checkpoint so evaluation and prediction use it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from parsenet.errors import ConfigError
from parsenet.models.trunk import BatchNormTrunk, Trunk
from parsenet.models.vgg import VGGTrunk

IMAGENET_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# Index of each convolution in torchvision's ``vgg16().features`` (the SSD ports' ``vgg`` list uses
# the same indices, and 31/33 for the reduced fc6/fc7).
VGG16_CONV_INDICES = {
    "conv1_1": 0, "conv1_2": 2,
    "conv2_1": 5, "conv2_2": 7,
    "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
    "conv4_1": 17, "conv4_2": 19, "conv4_3": 21,
    "conv5_1": 24, "conv5_2": 26, "conv5_3": 28,
}  # fmt: skip
REDUCED_FC_INDICES = {"fc6": 31, "fc7": 33}
# Data that ``pretrained: auto`` starts from random weights: generated images that are nothing
# like ImageNet's (and offline tests and the demo run on them).
RANDOM_START_DATA = ("synthetic",)
Tensors = dict[str, torch.Tensor]


def resolve_pretrained(
    source: Any,
    data_name: str | None,
    width_mult: float,
    weights_name: str = VGGTrunk.weights_name,
) -> tuple[Any, str]:
    """What ``model.backbone.pretrained=auto`` means for this run, and a line saying why.

    ``auto`` is ``imagenet`` (the paper's start) for real data at full width, and ``none`` for
    the synthetic data or ``width_mult`` ≠ 1 (ImageNet weights exist only at full width). Any
    other ``source`` is returned as it is, with an empty line.
    """
    if source is None or str(source).lower() != "auto":
        return source, ""
    prefix = "model.backbone.pretrained=auto"
    if data_name in RANDOM_START_DATA:
        return "none", f"{prefix}: random weights (none) for the {data_name} data"
    if width_mult != 1.0:
        return "none", (
            f"{prefix}: random weights (none) at model.backbone.width_mult={width_mult}; "
            "ImageNet weights exist only at full width (1.0)"
        )
    return "imagenet", (
        f"{prefix}: {weights_name} (imagenet) for data {data_name} at full "
        "width; model.backbone.pretrained=none starts from random weights"
    )


def reduce_fc(fc6: tuple[torch.Tensor, torch.Tensor], fc7: tuple[torch.Tensor, torch.Tensor]):
    """The original net surgery: VGG16's fc6/fc7 subsampled to the reduced 1024-channel layers.

    fc6 (4096×25088 or 4096×512×7×7) → ``[::4, :, ::3, ::3]`` = 1024×512×3×3 (spatial taps 0, 3, 6,
    which a dilation-3 3×3 convolution reads at the original spacing); fc7 (4096×4096) →
    ``[::4, ::4]`` = 1024×1024×1×1; biases ``[::4]``. Plain decimation, no rescaling.

    Returns:
        ``((fc6_weight, fc6_bias), (fc7_weight, fc7_bias))`` of the reduced layers.
    """
    fc6_weight, fc6_bias = fc6
    fc7_weight, fc7_bias = fc7
    fc6_weight = fc6_weight.reshape(4096, 512, 7, 7)[::4, :, ::3, ::3]
    fc7_weight = fc7_weight.reshape(4096, 4096)[::4, ::4].reshape(1024, 1024, 1, 1)
    return (fc6_weight.contiguous(), fc6_bias[::4].clone()), (
        fc7_weight.contiguous(),
        fc7_bias[::4].clone(),
    )


def _strip_prefix(state: Tensors) -> Tensors:
    """Drop a prefix shared by every key (``module.``, ``vgg.``, …) left by wrappers."""
    prefixes = {key.split(".", 1)[0] for key in state if "." in key}
    if len(prefixes) == 1 and all("." in key for key in state):
        prefix = next(iter(prefixes))
        if not prefix.isdigit() and prefix not in ("features", "classifier"):
            return {key.split(".", 1)[1]: value for key, value in state.items()}
    return state


def _get(state: Tensors, key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise ConfigError(f"model.backbone.pretrained={source}: the file has no {key!r}")
    return state[key]


def torchvision_layers(state: Tensors, arch: str, source: str) -> dict[str, tuple]:
    """Trunk weights by layer name from a torchvision VGG16 state dict."""
    layers = {
        name: (
            _get(state, f"features.{i}.weight", source),
            _get(state, f"features.{i}.bias", source),
        )
        for name, i in VGG16_CONV_INDICES.items()
    }
    fc6 = (_get(state, "classifier.0.weight", source), _get(state, "classifier.0.bias", source))
    fc7 = (_get(state, "classifier.3.weight", source), _get(state, "classifier.3.bias", source))
    if arch == "reduced_vgg16":
        layers["fc6"], layers["fc7"] = reduce_fc(fc6, fc7)
    else:
        layers["fc6"] = (fc6[0].reshape(4096, 512, 7, 7), fc6[1])
        layers["fc7"] = (fc7[0].reshape(4096, 4096, 1, 1), fc7[1])
    return layers


def reducedfc_layers(state: Tensors, arch: str, source: str) -> dict[str, tuple]:
    """Trunk weights by layer name from an SSD-style ``vgg16_reducedfc.pth``."""
    if arch != "reduced_vgg16":
        raise ConfigError(
            f"model.backbone.pretrained={source} holds the reduced VGG16 (fc6 1024×512×3×3); it "
            f"fits backbone.arch=reduced_vgg16, not {arch}"
        )
    indices = {**VGG16_CONV_INDICES, **REDUCED_FC_INDICES}
    return {
        name: (_get(state, f"{i}.weight", source), _get(state, f"{i}.bias", source))
        for name, i in indices.items()
    }


def read_source(source: str, setting: str | None = None) -> tuple[Tensors, str]:
    """Load a pretrained source's state dict for a VGG trunk and say which format it is in
    (``torchvision`` or ``reducedfc``). ``setting`` names the choice in messages (default
    ``model.backbone.pretrained=SOURCE``)."""
    state = load_state(
        source, IMAGENET_URL, "a torchvision VGG16 state dict or vgg16_reducedfc.pth", setting
    )
    if "classifier.0.weight" in state:
        return state, "torchvision"
    if f"{REDUCED_FC_INDICES['fc6']}.weight" in state:
        return state, "reducedfc"
    raise ConfigError(
        f"model.backbone.pretrained={source} is neither a torchvision VGG16 state dict "
        "(features.*, classifier.*) nor vgg16_reducedfc.pth (0.weight … 33.weight)"
    )


def load_state(source: str, url: str, expected: str, setting: str | None = None) -> Tensors:
    """The state dict of ``source``: ``imagenet`` downloads ``url`` (or finds it in the torch hub
    cache), anything else is a file holding ``expected`` (named in the messages)."""
    if source == "imagenet":
        state = _download(url, setting or f"model.backbone.pretrained={source}")
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"model.backbone.pretrained={source}: no such file; give imagenet, none, or the "
                f"path of {expected}"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle, zip and tensor errors all mean "not a state dict"
            raise ConfigError(
                f"model.backbone.pretrained={source}: cannot read it as a PyTorch state dict "
                f"({type(error).__name__}); is the file complete?"
            ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"model.backbone.pretrained={source} is not a state dict of tensors")
    return _strip_prefix(state)


def _download(url: str, setting: str) -> Tensors:
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True)
    except OSError as error:  # URLError, HTTPError and socket errors are OSErrors
        raise ConfigError(
            f"{setting}: cannot download {url} ({error}); put that file in "
            f"{hub_dir}/, give its path as model.backbone.pretrained=PATH, or start from random "
            "weights with model.backbone.pretrained=none"
        ) from None


# The input convention each format's weights were trained with.
CONVENTIONS = {"torchvision": "torchvision", "reducedfc": "caffe"}
READERS = {"torchvision": torchvision_layers, "reducedfc": reducedfc_layers}


def initialise_backbone(trunk: Trunk, source: Any, setting: str | None = None) -> str | None:
    """Copy pretrained weights into ``trunk`` and return their input convention.

    Args:
        trunk: the model's backbone (full width): a VGG trunk, or a BatchNorm trunk built from
            a torchvision classifier.
        source: ``none``/``None``, ``imagenet``, or a file path (see the module docstring);
            ``auto`` must be resolved first (:func:`resolve_pretrained`).
        setting: how messages name the choice (default ``model.backbone.pretrained=SOURCE``).

    Returns:
        ``torchvision`` or ``caffe`` — how inputs must be normalised for these weights — or
        ``None`` when ``source`` is ``none``.

    Raises:
        ConfigError: unreadable or unknown file, offline download, or shapes that do not fit.
    """
    if source is None or str(source).lower() == "none":
        return None
    source = str(source)
    if source.lower() == "auto":
        raise ConfigError(
            "model.backbone.pretrained=auto is resolved from the data and width by "
            "resolve_pretrained(); give none, imagenet or PATH here"
        )
    if trunk.width_mult != 1.0:
        raise ConfigError(
            f"model.backbone.pretrained={source} needs model.backbone.width_mult=1.0 "
            f"(got {trunk.width_mult}); pretrained weights exist only at full width"
        )
    if isinstance(trunk, BatchNormTrunk):
        return initialise_torchvision_trunk(trunk, source, setting)
    state, kind = read_source(source, setting)
    layers = READERS[kind](state, trunk.arch, source)
    convolutions = trunk.convolutions()
    with torch.no_grad():
        for name, conv in convolutions.items():
            weight, bias = layers[name]
            if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape:
                raise ConfigError(
                    f"model.backbone.pretrained={source}: {name} has shape {tuple(weight.shape)}, "
                    f"the {trunk.arch} trunk needs {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
    return CONVENTIONS[kind]


def initialise_torchvision_trunk(
    trunk: BatchNormTrunk, source: str, setting: str | None = None
) -> str:
    """Load torchvision's classifier weights (``imagenet``: the trunk's weights enum entry; or a
    file of the same state dict) into a ResNet or MobileNetV3 trunk; its classifier is left out.
    Returns the input convention, ``torchvision``."""
    weights = trunk.imagenet_weights
    state = load_state(source, weights.url, f"a torchvision {weights} state dict", setting)
    mapped = {ours: v for key, v in state.items() if (ours := trunk.trunk_key(key)) is not None}
    expected = trunk.layers.state_dict()
    missing = [key for key in expected if key not in mapped]
    if missing or len(mapped) != len(expected):
        odd = missing or sorted(set(mapped) - set(expected))
        raise ConfigError(
            f"model.backbone.pretrained={source} is not a torchvision {trunk.arch} state dict "
            f"(no {odd[0]!r} among {len(odd)} differing keys); give imagenet or that file"
        )
    for key, value in mapped.items():
        if value.shape != expected[key].shape:
            raise ConfigError(
                f"model.backbone.pretrained={source}: {key} has shape {tuple(value.shape)}, the "
                f"{trunk.arch} trunk needs {tuple(expected[key].shape)}"
            )
    trunk.layers.load_state_dict(mapped)
    return "torchvision"


def choose_input_norm(requested: str | None, weights_convention: str | None) -> str:
    """Resolve ``model.input_norm``: ``auto`` follows the weights (``torchvision`` without
    weights); an explicit choice that contradicts the weights is an error."""
    if requested in (None, "auto"):
        return weights_convention or "torchvision"
    if weights_convention is not None and requested != weights_convention:
        raise ConfigError(
            f"model.input_norm={requested} does not match the pretrained weights, which expect "
            f"{weights_convention} inputs; use model.input_norm=auto"
        )
    return requested

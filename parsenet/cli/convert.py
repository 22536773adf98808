"""``parsenet-convert caffe MODEL.caffemodel out=PATH [arch=auto|parsenet_voc|reduced_vgg16]``.

Converts the original Caffe models without Caffe:

- ``arch=parsenet_voc``: the released ParseNet (``VGG_VOC2012ext.caffemodel``) → a parsenet
  checkpoint that ``parsenet-eval`` / ``parsenet-predict`` / ``parsenet-export`` take as it is
  (the model and data config of the ``parsenet_vgg16-os8_voc12aug`` row, ``input_norm: caffe``);
- ``arch=reduced_vgg16``: ``VGG_ILSVRC_16_layers_fc_reduced.caffemodel`` → a state dict for
  ``model.backbone.pretrained=PATH`` (the Caffe input convention follows from it);
- ``arch=auto`` (default): ``parsenet_voc`` if the file has the ParseNet score layers, else
  ``reduced_vgg16``.

Every mistake ends in one ``error:`` line with exit status 2; the output file is written
atomically, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

from parsenet.cli.common import fail, one_line
from parsenet.config import compose
from parsenet.convert import (
    ARCHS,
    RELEASES,
    detect_arch,
    parsenet_voc_checkpoint,
    read_caffemodel,
    reduced_vgg16_state,
)
from parsenet.convert.caffe_layers import LoadReport, format_shape
from parsenet.data.normalization import get_normalization
from parsenet.engine.checkpoint import save_checkpoint
from parsenet.errors import ConfigError, ParsenetError
from parsenet.fileio import atomic_write

USAGE = f"usage: parsenet-convert caffe MODEL.caffemodel out=PATH [arch=auto|{'|'.join(ARCHS)}]"
SOURCE_FORMATS = ("caffe",)
DEFAULT_OPTIONS = {"out": None, "arch": "auto"}
# The paper-table row of the released VOC model (configs/experiment/).
RELEASED_EXPERIMENT = "parsenet_vgg16-os8_voc12aug"
OPTION = re.compile(r"^([A-Za-z_][\w.]*)=(.*)$")


def parse_arguments(arguments: list[str]) -> tuple[Path, dict[str, str]]:
    """Check ``caffe MODEL key=value …`` and return the model path and the options."""
    options = dict(DEFAULT_OPTIONS)
    positional = []
    for argument in arguments:
        match = OPTION.match(argument)
        if match is None:
            positional.append(argument)
        elif match.group(1) not in DEFAULT_OPTIONS:
            raise ConfigError(
                f"unknown option '{match.group(1)}'; parsenet-convert takes "
                f"{' and '.join(f'{key}=' for key in DEFAULT_OPTIONS)} ({USAGE})"
            )
        else:
            options[match.group(1)] = match.group(2)
    if not positional or positional[0] not in SOURCE_FORMATS:
        given = f"'{positional[0]}' is not a source format" if positional else "nothing to convert"
        raise ConfigError(f"{given}; {USAGE}")
    if len(positional) != 2:
        raise ConfigError(f"give exactly one model file after '{positional[0]}'; {USAGE}")
    if options["arch"] not in ("auto", *ARCHS):
        raise ConfigError(
            f"arch={options['arch']} is not one of auto, {', '.join(ARCHS)}: parsenet_voc for "
            f"{RELEASES['parsenet_voc'].file}, reduced_vgg16 for {RELEASES['reduced_vgg16'].file}"
        )
    if not options["out"]:
        raise ConfigError(f"pass out=PATH, the file to write; {USAGE}")
    if Path(options["out"]).is_dir():
        raise ConfigError(
            f"out={options['out']} is a folder; give the file to write, e.g. "
            f"out={Path(options['out']) / 'parsenet_voc12.pt'}"
        )
    return Path(positional[1]), options


def released_config() -> dict[str, Any]:
    """The resolved ``train.yaml`` of the released-model row, with Caffe inputs and no trunk
    initialisation (the checkpoint holds all weights)."""
    overrides = [
        f"experiment={RELEASED_EXPERIMENT}",
        "model.backbone.pretrained=none",
        "model.input_norm=caffe",
    ]
    return compose("train", overrides)


def describe_unused(report: LoadReport) -> str:
    """``fc8 (1000×1024×1×1, 1000), …``: the Caffe layers with weights that were not used."""
    return ", ".join(
        f"{layer.name} ({', '.join(format_shape(blob.shape) for blob in layer.blobs)})"
        for layer in report.unused
    )


def save_state_dict(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """Write a plain state dict atomically."""
    return atomic_write(path, lambda handle: torch.save(state, handle))


def convert(model_path: Path, options: dict[str, str]) -> None:
    """Read the caffemodel, map its layers, write ``out`` and print what was done."""
    started = time.perf_counter()
    net = read_caffemodel(model_path)
    arch = options["arch"] if options["arch"] != "auto" else detect_arch(net)
    out = Path(options["out"])
    if arch == "parsenet_voc":
        payload, report = parsenet_voc_checkpoint(net, released_config(), str(model_path))
        tensors, save = payload["model"], save_checkpoint
    else:
        payload, report = reduced_vgg16_state(net, str(model_path))
        tensors, save = payload, save_state_dict
    try:
        save(out, payload)
    except OSError as error:
        raise ConfigError(f"cannot write out={out}: {error.strerror or error}") from None
    count = sum(tensor.numel() for tensor in tensors.values())
    release = RELEASES[arch]
    origin = (
        f"the released {release.file}"
        if net.sha1 == release.sha1
        else f"not the released {release.file} ({release.sha1[:12]}…)"
    )
    caffe = get_normalization("caffe")
    print(
        f"read {model_path}: {len(net.layers)} layers, sha1 {net.sha1[:12]}… ({origin})\n"
        f"wrote {out}: arch={arch}, {len(report.layers)} layers, {count:,} parameters, in "
        f"{time.perf_counter() - started:.1f} s; inputs: caffe convention ({caffe.channel_order}, "
        f"0–255, minus {'/'.join(str(value) for value in caffe.mean)})"
    )
    if report.zero_biases:
        print(f"no bias in Caffe (bias_term: false), set to zero: {', '.join(report.zero_biases)}")
    if report.unused:
        print(f"not used (no place in arch={arch}): {describe_unused(report)}")
    if arch == "parsenet_voc":
        print(f"next: parsenet-eval checkpoint={out} data=voc data.root=PATH")
    else:
        print(f"next: parsenet-train model.backbone.pretrained={out} …")


def main() -> None:
    """Console entry point (``parsenet-convert``)."""
    arguments = sys.argv[1:]
    if {"-h", "--help"} & set(arguments):
        print(f"{USAGE}\n\n{__doc__}")
        return
    try:
        model_path, options = parse_arguments(arguments)
        convert(model_path, options)
    except ParsenetError as error:
        fail(one_line(error))


if __name__ == "__main__":
    main()

"""``parsenet-convert``: the original Caffe models as parsenet weights, without Caffe.

    parsenet-convert caffe MODEL.caffemodel --out PATH [--arch auto|parsenet_voc|reduced_vgg16]

- ``--arch parsenet_voc``: the released ParseNet (``VGG_VOC2012ext.caffemodel``) → a parsenet
  checkpoint that ``parsenet-eval`` / ``parsenet-predict`` / ``parsenet-export`` take as it is
  (the model and data config of the ``parsenet_vgg16-os8_voc12aug`` row, ``input_norm: caffe``);
- ``--arch reduced_vgg16``: ``VGG_ILSVRC_16_layers_fc_reduced.caffemodel`` → a state dict for
  ``model.backbone.pretrained=PATH`` (the Caffe input convention follows from it);
- ``--arch auto`` (default): ``parsenet_voc`` if the file has the ParseNet score layers, else
  ``reduced_vgg16``.

Every mistake ends in one ``error:`` line with exit status 2; the output file is written
atomically, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from parsenet.cli.arguments import ArgumentParser
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
from parsenet.engine.runtime.checkpoint import save_checkpoint
from parsenet.errors import ConfigError, ParsenetError
from parsenet.fileio import atomic_write

# The paper-table row of the released VOC model (configs/experiment/).
RELEASED_EXPERIMENT = "parsenet_vgg16-os8_voc12aug"


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


def convert_caffe(args: argparse.Namespace) -> None:
    """Read the caffemodel, map its layers, write ``--out`` and print what was done."""
    started = time.perf_counter()
    model_path, out = args.model, args.out
    net = read_caffemodel(model_path)
    arch = args.arch if args.arch != "auto" else detect_arch(net)
    if arch == "parsenet_voc":
        payload, report = parsenet_voc_checkpoint(net, released_config(), str(model_path))
        tensors, save = payload["model"], save_checkpoint
    else:
        payload, report = reduced_vgg16_state(net, str(model_path))
        tensors, save = payload, save_state_dict
    try:
        save(out, payload)
    except OSError as error:
        raise ConfigError(f"cannot write {out}: {error.strerror or error}") from None
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


def output_file(text: str) -> Path:
    """An argparse type: the file to write (not a folder)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} is a folder; give the file to write, e.g. {path / 'parsenet_voc12.pt'}"
        )
    return path


def parser() -> ArgumentParser:
    """The command line of ``parsenet-convert``."""
    main_parser = ArgumentParser(prog="parsenet-convert", description=__doc__.split("\n")[0])
    formats = main_parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    caffe = formats.add_parser("caffe", help="a binary .caffemodel (ParseNet or its VGG16 trunk)")
    caffe.add_argument("model", type=Path, metavar="MODEL.caffemodel", help="the file to convert")
    caffe.add_argument(
        "--out", type=output_file, required=True, metavar="PATH", help="the file to write"
    )
    caffe.add_argument(
        "--arch",
        choices=("auto", *ARCHS),
        default="auto",
        help=f"parsenet_voc for {RELEASES['parsenet_voc'].file} (→ a checkpoint), reduced_vgg16 "
        f"for {RELEASES['reduced_vgg16'].file} (→ trunk weights); auto (default): told apart "
        "by the ParseNet score layers",
    )
    caffe.set_defaults(run=convert_caffe)
    return main_parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``parsenet-convert``."""
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except ParsenetError as error:
        fail(one_line(error))


if __name__ == "__main__":
    main()

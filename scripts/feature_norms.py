"""The paper's Figure 2 for trained checkpoints: feature norms per layer and the learned γ.

For each checkpoint, the mean L2 norm (over channels, per location) of conv4_3, fc7 and pool6
(the global average of fc7) before any normalisation, over the first N validation images, and
mean/min/max of every L2Norm's learned scale and its mean change |γ − γ₀| from the value it was
built with. Prints markdown and writes it to ``--out``; ``--images 0`` gives the scales alone
(e.g. over a run's snapshots, ``checkpoints/iter_*.pt``, to follow γ through training).

    python scripts/feature_norms.py CHECKPOINT [CHECKPOINT ...] [--images 50] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from parsenet.analysis import FIGURE2_LAYERS, feature_norms, learned_scales
from parsenet.data import build_dataset
from parsenet.data.loader import make_loader
from parsenet.data.transforms import eval_transform
from parsenet.errors import ParsenetError
from parsenet.fileio import atomic_write
from parsenet.loading import load_for_inference


def checkpoint_report(path: Path, num_images: int) -> tuple[dict, dict, str]:
    """Feature norms and γ summary of one checkpoint, and what they were measured on (no norms
    and no dataset read for ``num_images`` 0)."""
    loaded = load_for_inference(path, "cpu")
    if num_images == 0:
        return {}, learned_scales(loaded.model), ""
    data = loaded.data_config
    dataset = build_dataset(data, data["val_split"], eval_transform(loaded.normalization))
    loader = make_loader(dataset, 1, 0)
    images = (batch["image"] for batch in itertools.islice(loader, num_images))
    norms = feature_norms(loaded.model, images)
    where = f"{min(num_images, len(dataset))} {data['name']} {data['val_split']} images"
    return norms, learned_scales(loaded.model), where


def main() -> int:
    """Measure every checkpoint given and print/write one markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument(
        "--images", type=int, default=50, help="validation images to average (0: scales only)"
    )
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args()
    norm_lines = [
        "| checkpoint | " + " | ".join(f"‖{name}‖ (mean)" for name in FIGURE2_LAYERS) + " |",
        "|---|" + "---|" * len(FIGURE2_LAYERS),
    ]
    scale_lines = [
        "| checkpoint | L2Norm | channels | γ mean | γ min | γ max | mean \\|γ − γ₀\\| |",
        "|---|---|---|---|---|---|---|",
    ]
    measured_on = set()
    try:
        for path in args.checkpoints:
            norms, scales, where = checkpoint_report(path, args.images)
            if norms:
                measured_on.add(where)
                cells = " | ".join(f"{norms[name]:.4g}" for name in FIGURE2_LAYERS)
                norm_lines.append(f"| {path} | {cells} |")
            for name, s in scales.items():
                scale_lines.append(
                    f"| {path} | {name} | {s['channels']} | {s['mean']:.4f} | {s['min']:.4f} | "
                    f"{s['max']:.4f} | {s['change']:.2e} |"
                )
    except ParsenetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    norm_part = [
        f"Feature norms before normalisation, averaged over {', '.join(sorted(measured_on))}:",
        "",
        *norm_lines,
        "",
    ]
    scale_part = ["Learned scales γ:", "", *scale_lines, ""]
    text = "\n".join([*(norm_part if measured_on else []), *scale_part])
    print(text)
    if args.out:
        atomic_write(args.out, lambda handle: handle.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

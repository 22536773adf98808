"""``parsenet-export checkpoint=PATH format=torchscript|onnx``: export and check a model.

Writes the exported file and ``export.json`` (parity numbers, the input normalisation the model
expects, class names and palette). A file that fails the parity check is not kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parsenet.cli.common import hydra_command
from parsenet.data.normalization import get_normalization
from parsenet.engine.checkpoint import load_checkpoint, restore_model
from parsenet.errors import ParsenetError
from parsenet.export import FORMATS, export_model, load_runner, parity
from parsenet.report import write_json


@hydra_command("export")
def main(cfg: dict[str, Any], run_dir: Path) -> None:
    """Export the checkpoint's model, check it on two image sizes, keep it if it agrees."""
    path = Path(cfg["checkpoint"])
    checkpoint = load_checkpoint(path)
    model = restore_model(checkpoint, path).eval()
    fmt = cfg["format"]
    out = Path(cfg["out"] or run_dir / f"model{FORMATS.get(fmt, '')}")
    export_model(model, fmt, out)
    results = parity(model, load_runner(fmt, out), cfg["check_sizes"])
    for result in results:
        height, width = result["size"]
        print(
            f"parity {height}×{width}: max |logit difference| {result['max_abs_diff']:.3g}, "
            f"same argmax on {100 * result['argmax_agreement']:.3f} % of pixels"
        )
    worst = min(result["argmax_agreement"] for result in results)
    if worst < cfg["min_agreement"]:
        out.unlink()
        raise ParsenetError(
            f"the {fmt} export agrees with the eager model on only {100 * worst:.3f} % of pixels "
            f"(min_agreement={cfg['min_agreement']}); nothing was kept"
        )
    norm = get_normalization(checkpoint["config"]["model"]["input_norm"])
    write_json(
        run_dir / "export.json",
        {
            "file": str(out),
            "format": fmt,
            "checkpoint": str(path),
            "input": "N×3×H×W float32, any H and W; output N×K×H×W logits",
            "input_norm": {
                "name": norm.name,
                "channel_order": norm.channel_order,
                "pixel_scale": norm.pixel_scale,
                "mean": list(norm.mean),
                "std": list(norm.std),
            },
            "class_names": checkpoint["dataset"]["class_names"],
            "palette": checkpoint["dataset"]["palette"],
            "parity": results,
        },
    )
    print(
        f"exported {out} ({fmt}); inputs: {norm.name} normalisation; see {run_dir / 'export.json'}"
    )


if __name__ == "__main__":
    main()

"""``parsenet-export checkpoint=PATH format=torchscript|onnx``: export and check a model.

Writes the exported file at ``out=`` and ``export.json`` in the run folder (parity numbers, the
input normalisation the model expects, class names and palette). The export is that one file, the
weights inside (an ONNX model with more than 1.5 GiB of weights also has ``<out>.data`` beside
it). It is checked under its final name in a hidden folder beside ``out=`` and only then renamed
into place: one that fails the check, or is interrupted, leaves what was at ``out=`` as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parsenet.cli.common import hydra_command
from parsenet.export import FORMATS, check_parity_settings, check_quantize, export_checkpoint
from parsenet.quantization import CalibrationSettings


def check_config(cfg: dict[str, Any]) -> None:
    """``check_sizes``, ``min_agreement``, ``quantize`` and the ``calibration`` node checked
    (see :func:`check_parity_settings`, :func:`check_quantize`)."""
    check_parity_settings(cfg["check_sizes"], cfg["min_agreement"])
    check_quantize(cfg["format"], cfg["quantize"])
    CalibrationSettings.from_config(cfg["calibration"])


@hydra_command("export", check=check_config)
def main(cfg: dict[str, Any], run_dir: Path) -> None:
    """Export the checkpoint's model, check it on two image sizes, keep it if it agrees."""
    fmt = cfg["format"]
    out = Path(cfg["out"] or run_dir / f"model{FORMATS.get(fmt, '')}")
    about = export_checkpoint(
        cfg["checkpoint"],
        fmt,
        out,
        run_dir / "export.json",
        cfg["check_sizes"],
        cfg["min_agreement"],
        cfg["quantize"],
        cfg["calibration"],
    )
    for result in about["parity"]:
        height, width = result["size"]
        print(
            f"parity {height}×{width}: max |logit difference| {result['max_abs_diff']:.3g}, "
            f"same argmax on {100 * result['argmax_agreement']:.3f} % of pixels"
        )
    kind = f"{fmt} {cfg['quantize']}" if cfg["quantize"] else fmt
    print(
        f"exported {about['file']} ({kind}); inputs: {about['input_norm']['name']} "
        f"normalisation; see {run_dir / 'export.json'}"
    )


if __name__ == "__main__":
    main()

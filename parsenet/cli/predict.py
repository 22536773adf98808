"""``parsenet-predict checkpoint=PATH inputs=FILE|DIR|GLOB``: segment any images.

For every readable input: ``labels/<name>.png`` (class indices in a palette PNG),
``overlays/<name>.png`` and ``side_by_side/<name>.png`` in the run folder, where ``<name>`` is
the input's path under the inputs' common folder (``a/same.jpg`` → ``a/same.png``; ``x.jpg`` and
``x.png`` side by side → ``x.jpg.png`` and ``x.png.png``). Unreadable files are reported and
skipped; the run goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from parsenet.cli.common import hydra_command
from parsenet.engine.runtime.precision import check_inference_precision
from parsenet.engine.scoring.inference import InferenceMode
from parsenet.loading import load_for_inference
from parsenet.prediction_files import check_settings, predict_files
from parsenet.quantization import CalibrationSettings


def check_config(cfg: dict[str, Any]) -> InferenceMode:
    """``batch_size``, ``alpha``, the ``inference`` node, ``backend`` with ``precision`` and the
    ``calibration`` node checked (a :class:`ConfigError` naming the key otherwise); returns the
    inference mode."""
    check_settings(cfg["batch_size"], cfg["alpha"])
    check_inference_precision(cfg["backend"], cfg["precision"])
    CalibrationSettings.from_config(cfg["calibration"])
    return InferenceMode.from_config(cfg["inference"])


@hydra_command("predict", check=check_config)
def main(cfg: dict[str, Any], run_dir: Path) -> None:
    """Predict every input image and write its label PNG, overlay and side-by-side picture."""
    inference = check_config(cfg)  # before the model is loaded
    loaded = load_for_inference(
        cfg["checkpoint"],
        cfg["device"],
        channels_last=cfg["channels_last"],
        backend=cfg["backend"],
        precision=cfg["precision"],
        calibration=cfg["calibration"],
    )
    with tqdm(desc="predict", disable=None) as bar:

        def show(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = predict_files(
            loaded,
            cfg["inputs"],
            run_dir,
            cfg["batch_size"],
            cfg["alpha"],
            inference,
            progress=show,
        )
    print(
        f"predicted {len(report.written)} image(s) into {run_dir} "
        "(labels/, overlays/, side_by_side/)"
    )
    if report.skipped:
        print(f"skipped {len(report.skipped)} unreadable file(s): {', '.join(report.skipped)}")


if __name__ == "__main__":
    main()

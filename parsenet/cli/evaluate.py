"""``parsenet-eval``: score a checkpoint (or a folder of predictions) on a split.

Writes ``metrics.json``, ``confusion.npy``, ``confusion.png``, ``per_image.csv`` and (unless
``report=false``) ``report.html`` into the run folder and prints the per-class table. Under
``torchrun`` the images are split between the processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parsenet.cli.common import hydra_command, share_run_dir
from parsenet.engine.runtime.distributed import init_distributed, shutdown
from parsenet.engine.runtime.precision import check_inference_precision
from parsenet.engine.scoring.inference import InferenceMode
from parsenet.engine.training.settings import flag, whole_number
from parsenet.errors import ConfigError
from parsenet.evaluation import evaluate, score_predictions
from parsenet.quantization import CalibrationSettings
from parsenet.report import bad_samples_note, class_table


def check_config(cfg: dict[str, Any]) -> InferenceMode:
    """One of ``checkpoint`` and ``predictions`` given, and the ``inference`` node, ``backend``
    with ``precision``, the ``calibration`` node, ``report`` and ``report_worst`` checked (a
    :class:`ConfigError` otherwise); returns the inference mode."""
    if (cfg["checkpoint"] is None) == (cfg["predictions"] is None):
        raise ConfigError("pass checkpoint=PATH, or predictions=DIR with data=NAME (one of them)")
    check_inference_precision(cfg["backend"], cfg["precision"])
    CalibrationSettings.from_config(cfg["calibration"])
    flag("report", cfg["report"])
    whole_number("report_worst", cfg["report_worst"], 0)
    return InferenceMode.from_config(cfg["inference"])


@hydra_command("eval", open_nodes=("model", "data"), check=check_config)
def main(cfg: dict[str, Any], run_dir: Path) -> None:
    """Evaluate, then write metrics.json, confusion.npy, confusion.png and print the table."""
    mode = check_config(cfg)
    context = init_distributed(cfg["device"])
    run_dir = share_run_dir(run_dir, context)
    if cfg["checkpoint"] is not None:
        result = evaluate(
            cfg["checkpoint"],
            cfg["data"],
            cfg["split"],
            mode,
            model=cfg["model"],
            context=context,
            progress=True,
            channels_last=cfg["channels_last"],
            report_worst=cfg["report_worst"],
            backend=cfg["backend"],
            precision=cfg["precision"],
            calibration=cfg["calibration"],
        )
    else:
        result = score_predictions(
            cfg["predictions"],
            cfg["data"],
            cfg["split"],
            context,
            progress=True,
            report_worst=cfg["report_worst"],
        )
    shutdown(context)
    if not context.is_main:
        return
    written = result.write(run_dir, report=cfg["report"])
    print(class_table(result.scores, result.class_names))
    inference = result.inference
    settings = ", ".join(f"{key} {value}" for key, value in inference.items() if key != "mode")
    print(
        f"{result.model}: mode {inference['mode']}{f' ({settings})' if settings else ''}, "
        f"dataset {result.dataset}, split {result.split}, images {result.num_images}"
    )
    if note := bad_samples_note(result.record()):
        print(note)
    print(f"metrics: {written['metrics']}  confusion: {written['picture']}")
    if "report" in written:
        print(f"report: {written['report']}")


if __name__ == "__main__":
    main()

"""``report.html``: one evaluation as a page a reader takes in at a glance — the headline scores,
the protocol, per-class IoU / accuracy / boundary IoU with pixel counts, the row-normalised
confusion matrix, the context statistics with the images they come from, and the k worst images
(image | label | prediction | error map) with their per-image scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parsenet.html.page import class_swatches, label_panels, png_data_uri, render, write_page
from parsenet.image_scores import ImageRecord
from parsenet.metrics import BOUNDARY_DILATION_RATIO
from parsenet.visualize import confusion_image

if TYPE_CHECKING:
    from parsenet.evaluation import EvaluationResult

CONTEXT_ROWS = 10  # the images with the most out-of-context pixels listed by name
HEADLINE = (  # (metrics.json key, title, what it is), after mIoU
    ("pixel_acc", "pixel accuracy", "labelled pixels predicted right"),
    ("mean_acc", "mean accuracy", "per-class accuracy, averaged"),
    ("fwIoU", "frequency-weighted IoU", "IoU weighted by each class's pixels"),
    ("boundary_iou", "boundary IoU", "IoU within the contours' band"),
    ("out_of_context", "out of context", "pixels predicted as a class absent from their image"),
    ("class_set_accuracy", "class-set accuracy", "images predicting exactly their own classes"),
)


def write_evaluation_report(path: str | Path, result: EvaluationResult) -> Path:
    """Write ``report.html`` for ``result`` atomically (see :func:`evaluation_page`)."""
    return write_page(path, evaluation_page(result))


def evaluation_page(result: EvaluationResult) -> str:
    """The report of one evaluation as a self-contained HTML page (styles inline, pictures as
    ``data:`` URIs, no script)."""
    names, palette = result.class_names, result.palette
    records = result.images.records if result.images is not None else []
    worst = result.images.worst() if result.images is not None else []
    classes = class_rows(result)
    return render(
        "evaluation.html.j2",
        title=f"{result.model} on {result.dataset} {result.split}: mIoU {100 * result.miou:.2f} %",
        heading=f"Evaluation: {result.model} on {result.dataset} {result.split}",
        subheading=result.source,
        result=result,
        headline=[
            {"title": title, "value": result.scores.get(key), "about": about}
            for key, title, about in HEADLINE
        ],
        protocol=protocol_rows(result),
        classes=classes,
        absent=[row["name"] for row in classes if row["iou"] is None],
        confusion=png_data_uri(confusion_image(result.confusion, names)),
        context=context_rows(records, names, palette, {entry.record.name for entry in worst}),
        wrong_sets=sum(1 for r in records if r.pixels and set(r.predicted) != set(r.classes)),
        worst=[
            {
                "record": entry.record,
                "anchor": anchor(entry.record),
                "classes": class_swatches(entry.record.classes, names, palette),
                "absent": class_swatches(entry.record.out_of_context_classes, names, palette),
                "panels": label_panels(
                    entry.image,
                    entry.label,
                    [("prediction", entry.prediction)],
                    palette,
                    result.ignore_index,
                ),
            }
            for entry in worst
        ],
        scored=len(records),
        boundary_ratio=BOUNDARY_DILATION_RATIO,
    )


def anchor(record: ImageRecord) -> str:
    """The id of an image's section in the page."""
    return f"image-{record.index}"


def protocol_rows(result: EvaluationResult) -> list[tuple[str, str]]:
    """What was scored and how, as (field, value) rows."""
    inference = dict(result.inference)
    mode = inference.pop("mode")
    settings = ", ".join(f"{key} {value}" for key, value in inference.items())
    precision = result.record().get("precision")
    skipped = (result.bad_samples or {}).get("skipped", 0)
    rows = [
        ("checkpoint" if result.model != "predictions" else "predictions", result.source),
        ("model", result.model),
        ("dataset and split", f"{result.dataset}, {result.split}"),
        ("images scored", f"{result.num_images}" + (f" ({skipped} skipped)" if skipped else "")),
        ("inference", f"{mode}" + (f" ({settings})" if settings else "")),
        ("scores at", "each label's own resolution; ignore label left out"),
    ]
    if precision:
        rows.append(("backend and precision", ", ".join(str(v) for v in precision.values())))
    if result.layout:
        layout = result.layout
        rows.append(("memory layout", f"{layout['memory_format']} ({layout['decided_by']})"))
    rows += [
        ("training seed", "not known" if result.seed is None else str(result.seed)),
        ("code commit", result.commit or "not known (not run from a git checkout)"),
    ]
    return rows


def class_rows(result: EvaluationResult) -> list[dict[str, Any]]:
    """Per class: name, colour, IoU, accuracy, boundary IoU, label and predicted pixels."""
    matrix = np.asarray(result.confusion)
    scores = result.scores
    boundary = scores.get("per_class_boundary_iou", {})
    rows = []
    for index, name in enumerate(result.class_names):
        rows.append(
            {
                "name": name,
                "colour": class_swatches([index], result.class_names, result.palette)[0]["colour"],
                "iou": scores["per_class_iou"].get(name),
                "acc": scores["per_class_acc"].get(name),
                "boundary": boundary.get(name),
                "label_pixels": int(matrix[index].sum()),
                "predicted_pixels": int(matrix[:, index].sum()),
            }
        )
    return rows


def context_rows(
    records: list[ImageRecord],
    class_names: list[str],
    palette: list[list[int]],
    drawn: set[str],
) -> list[dict[str, Any]]:
    """The images with the most pixels out of context (most first), with the classes predicted
    there that their label lacks; ``drawn``: names drawn among the worst images."""
    out = [r for r in records if r.out_of_context]
    out.sort(key=lambda r: (-r.out_of_context * r.pixels, r.index))
    return [
        {
            "record": record,
            "pixels": round(record.out_of_context * record.pixels),
            "absent": class_swatches(record.out_of_context_classes, class_names, palette),
            "anchor": anchor(record) if record.name in drawn else None,
        }
        for record in out[:CONTEXT_ROWS]
    ]

"""What every report page shares: the Jinja2 environment (autoescaping on) over the package's
templates, pictures as inline PNG ``data:`` URIs, class colours, picture rows of a labelled image
(image | label | prediction | error map), and the atomic write of the page."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from PIL import Image

from parsenet.fileio import atomic_write
from parsenet.visualize import colorize, error_map

TEMPLATES = Path(__file__).resolve().parent / "templates"


def png_data_uri(array: np.ndarray) -> str:
    """An H×W×3 (or H×W) uint8 array as a ``data:image/png;base64,…`` URI."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def css_colour(colour: Sequence[int]) -> str:
    """An RGB triple as a CSS colour (``rgb(128, 0, 0)``)."""
    red, green, blue = (int(value) for value in colour[:3])
    return f"rgb({red}, {green}, {blue})"


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage with ``digits`` decimals; ``–`` for None."""
    return "–" if value is None else f"{100.0 * value:.{digits}f}"


def signed(value: float | None, digits: int = 2) -> str:
    """A difference in points with its sign; ``–`` for None."""
    return "–" if value is None else f"{value:+.{digits}f}"


@cache
def environment() -> jinja2.Environment:
    """The templates' environment: autoescaping on, undefined names an error."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(colour=css_colour, percent=percent, signed=signed)
    return env


def render(template: str, **context: Any) -> str:
    """``templates/<template>`` rendered with ``context`` (plus ``written``: the time, UTC)."""
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return environment().get_template(template).render(written=written, **context)


def write_page(path: str | Path, html: str) -> Path:
    """Write a page atomically (readers see the old page or the whole new one)."""
    return atomic_write(path, lambda handle: handle.write(html.encode("utf-8")))


def label_panels(
    image: np.ndarray | None,
    label: np.ndarray,
    predictions: Sequence[tuple[str, np.ndarray]],
    palette: Sequence[Sequence[int]],
    ignore_index: int = 255,
    errors: bool = True,
) -> list[dict[str, str]]:
    """The pictures of one labelled image as ``{"title", "src"}`` (``src`` a data URI): the image
    (when given), its label, then per ``(title, prediction)`` the prediction and, with
    ``errors``, its error map (wrong pixels in the colour predicted, right ones faded; see
    :func:`~parsenet.visualize.error_map`)."""
    panels = [] if image is None else [{"title": "image", "src": png_data_uri(image)}]
    panels.append({"title": "label", "src": png_data_uri(colorize(label, palette, ignore_index))})
    for title, prediction in predictions:
        coloured = colorize(prediction, palette, ignore_index)
        panels.append({"title": title, "src": png_data_uri(coloured)})
        if not errors:
            continue
        wrong = error_map(label, prediction, palette, ignore_index)
        panels.append({"title": f"errors of {title}", "src": png_data_uri(wrong)})
    return panels


def class_swatches(
    indices: Sequence[int], class_names: Sequence[str], palette: Sequence[Sequence[int]]
) -> list[dict[str, str]]:
    """``{"name", "colour"}`` of each class index (an index outside the classes as ``#i``)."""
    return [
        {
            "name": class_names[i] if i < len(class_names) else f"#{i}",
            "colour": css_colour(palette[i]) if i < len(palette) else "rgb(255, 255, 255)",
        }
        for i in indices
    ]

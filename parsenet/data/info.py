"""What every dataset shares: class names, colours, and the ignore index."""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = 255


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset's label space.

    Attributes:
        name: short dataset name (``voc``, ``camvid``, ``synthetic``, …).
        class_names: one name per class index.
        palette: one RGB colour per class index, for drawing labels and predictions.
        ignore_index: label value excluded from the loss and the metrics.
    """

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        """Number of classes (the ignore index is not a class)."""
        return len(self.class_names)

    def to_dict(self) -> dict:
        """A JSON-friendly copy, stored in checkpoints."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "palette": [list(colour) for colour in self.palette],
            "ignore_index": self.ignore_index,
        }


def voc_palette(num_colours: int = 256) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC colour map (bit-interleaved index → RGB), as the devkit's labelcolormap."""
    colours = []
    for index in range(num_colours):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((red, green, blue))
    return tuple(colours)


VOC_COLOURS = voc_palette()  # all 256 entries: what label PNGs written here carry

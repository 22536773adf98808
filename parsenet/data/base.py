"""A segmentation dataset over (image file, label file) pairs, shared by every format reader."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from parsenet.data.bad_samples import ON_BAD_SAMPLE
from parsenet.data.info import DatasetInfo
from parsenet.errors import ConfigError, DataError

# Pillow modes of label files that hold class indices: palette, greyscale, 16-bit greyscale.
LABEL_MODES = ("P", "L", "I;16", "I")

# A transform takes (RGB uint8 image, uint8/int label) and returns a dict with "image" and "label".
PairTransform = Callable[[np.ndarray, np.ndarray], dict]
# The most pixels one image or label file may declare (read from its header, before decoding), so
# no file, however small, makes a reader allocate more than about 3 bytes per allowed pixel. The
# environment variable raises or lowers it for every command and loader process; the default
# (8192 × 8192) is above what cameras write and below Pillow's own bound.
MAX_PIXELS_VARIABLE = "PARSENET_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 8192 * 8192
READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def max_image_pixels() -> int:
    """The pixel bound per image: ``PARSENET_MAX_IMAGE_PIXELS`` if set, else the default."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(
            f"{MAX_PIXELS_VARIABLE}={text!r} must be a whole number of pixels ≥ 1 "
            f"(default {DEFAULT_MAX_PIXELS})"
        )
    return int(text)


def open_checked(path: Path, kind: str) -> Image.Image:
    """``path`` opened by Pillow, which reads its header only, once its declared size is known
    to be within :func:`max_image_pixels`; ``kind`` (``image``, ``label``) names it in errors.

    Raises:
        DataError: the file cannot be opened, is not a regular file (a FIFO or a device, whose
            reading may never end), is not an image Pillow can identify, or declares too many
            pixels.
    """
    limit = max_image_pixels()
    if path.exists() and not path.is_file():
        kind_of = "a folder" if path.is_dir() else "not a regular file (a FIFO, socket or device)"
        raise DataError(f"cannot read {kind} {path}: it is {kind_of}")
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # Pillow refuses only what is over twice its bound
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:  # Pillow's bound, ≥ ours: the size is over both
        declared = f"it declares more than {2 * Image.MAX_IMAGE_PIXELS} pixels"
        raise DataError(too_large(kind, path, declared, limit)) from None
    except Exception as error:  # not an image Pillow knows, or a header it cannot parse
        raise decode_error(kind, path, error) from None
    width, height = image.size
    if width * height > limit:
        image.close()
        declared = f"it declares {width}×{height} = {width * height} pixels"
        raise DataError(too_large(kind, path, declared, limit))
    return image


def too_large(kind: str, path: Path, reason: str, limit: int) -> str:
    """The line for a file over the pixel bound, saying how to allow a real one."""
    return (
        f"{kind} {path} is not read: {reason}, over the limit of {limit} pixels per image; "
        f"for a real image that large set {MAX_PIXELS_VARIABLE} to a higher number"
    )


def decode_error(kind: str, path: Path, error: Exception) -> DataError:
    """A decoder's failure on a bad file, whatever its type, as one :class:`DataError`."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return DataError(f"cannot read {kind} {path}: {reason}")


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as an H×W×3 RGB uint8 array.

    Its declared size is checked first (see :func:`open_checked`). OpenCV decodes: it is faster
    than Pillow and gives the same pixels (identical on every VOC JPEG and CamVid PNG tried;
    docs/benchmarks.md). Like Pillow it ignores the EXIF orientation, so images stay aligned
    with their labels. What OpenCV cannot decode (a format it lacks, a damaged file) goes to
    Pillow, which decodes it or says why not: any failure is a :class:`DataError` naming the
    file.
    """
    with open_checked(path, "image") as image:
        try:
            decoded = opencv_decode(path)
            return decoded if decoded is not None else np.asarray(image.convert("RGB"))
        except Exception as error:  # every decoder failure is a bad file
            raise decode_error("image", path, error) from None


def opencv_decode(path: Path) -> np.ndarray | None:
    """``path`` decoded by OpenCV as RGB, or None where OpenCV cannot decode it."""
    encoded = np.fromfile(path, dtype=np.uint8)
    try:
        decoded = cv2.imdecode(encoded, READ_FLAGS) if encoded.size else None
    except cv2.error:
        return None
    return None if decoded is None else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def read_label(path: Path) -> np.ndarray:
    """Decode a label PNG as class indices: palette (P), greyscale (L) or 16-bit greyscale
    (I;16, I) PNGs, never colours. 16-bit values come back as they are (uint16/int32);
    :func:`check_label_values` refuses those outside the classes. Its declared size is checked
    before it is decoded (see :func:`open_checked`)."""
    with open_checked(path, "label") as label:
        if label.mode not in LABEL_MODES:
            raise DataError(
                f"label {path} is a mode-{label.mode} image; labels must be palette (P), "
                "greyscale (L) or 16-bit greyscale (I;16) PNGs holding class indices — "
                "convert colour labels to indices"
            )
        try:
            return np.asarray(label)
        except Exception as error:  # every decoder failure is a bad file
            raise decode_error("label", path, error) from None


class SegmentationDataset(Dataset):
    """Pairs of image and label files with a shared label space.

    Every file is checked to exist when the dataset is built; sizes and label values are checked
    when a pair is loaded, so a bad pair fails with a message naming its files instead of
    training on a misaligned or out-of-range label. With ``on_bad_sample="skip"`` a pair that
    cannot be read is returned as ``{"skipped": [message]}`` instead (see
    :mod:`parsenet.data.bad_samples`), and missing files are found when they are loaded.

    Args:
        pairs: (image path, label path) for every sample, in order.
        info: class names, palette and ignore index.
        transform: applied to the decoded (image, label) pair; returns ``image`` and ``label``.
        label_map: optional lookup table (256 entries) applied to raw label values before the
            range check, e.g. to turn a dataset's void value into the ignore index.
        on_bad_sample: ``raise`` (stop at the first bad pair) or ``skip``.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        info: DatasetInfo,
        transform: PairTransform | None = None,
        label_map: np.ndarray | None = None,
        on_bad_sample: str = "raise",
    ) -> None:
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ConfigError(
                f"data.on_bad_sample={on_bad_sample!r}; choose one of {', '.join(ON_BAD_SAMPLE)}"
            )
        self.pairs = list(pairs)
        self.info = info
        self.transform = transform
        self.label_map = label_map
        self.on_bad_sample = on_bad_sample
        if on_bad_sample == "raise":
            check_files_exist(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def sample_name(self, index: int) -> str:
        """The sample's id (its image file name without extension)."""
        return self.pairs[index][0].stem

    def load_label(self, index: int) -> np.ndarray:
        """Decode and check one label: uint8 values in the classes or the ignore index."""
        label_path = self.pairs[index][1]
        if not label_path.is_file():
            raise DataError(f"label file {label_path} does not exist")
        label = read_label(label_path)
        if self.label_map is not None:
            label = apply_label_map(label, self.label_map)
        check_label_values(label, self.info, label_path)
        return label.astype(np.uint8, copy=False)

    def load_image(self, index: int) -> np.ndarray:
        """Decode one image as H×W×3 RGB uint8."""
        image_path = self.pairs[index][0]
        if not image_path.is_file():
            raise DataError(f"image file {image_path} does not exist")
        return read_image(image_path)

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode and check one pair: RGB image and label with values in the classes or ignore."""
        image_path, label_path = self.pairs[index]
        image = self.load_image(index)
        label = self.load_label(index)
        if image.shape[:2] != label.shape:
            raise DataError(
                f"image {image_path} is {image.shape[1]}×{image.shape[0]} but its label "
                f"{label_path} is {label.shape[1]}×{label.shape[0]}; they must match"
            )
        return image, label

    def __getitem__(self, index: int) -> dict:
        try:
            image, label = self.load_pair(index)
        except DataError as error:
            if self.on_bad_sample == "raise":
                raise
            return {"skipped": [str(error)]}
        if self.transform is None:
            return {"image": image, "label": label}
        return self.transform(image, label)


def check_files_exist(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Raise one error naming the first missing image or label (and how many are missing)."""
    missing = [path for pair in pairs for path in pair if not path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more missing files)" if len(missing) > 1 else ""
        kind = "label" if missing[0] in {label for _, label in pairs} else "image"
        raise DataError(f"{kind} file {missing[0]} does not exist{more}")


def apply_label_map(label: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Raw label values looked up in ``table``; values beyond it (16-bit labels) stay as they
    are, for :func:`check_label_values` to refuse."""
    inside = (label >= 0) & (label < len(table))
    if inside.all():
        return table[label]
    return np.where(inside, table[np.clip(label, 0, len(table) - 1)], label)


def check_label_values(label: np.ndarray, info: DatasetInfo, path: Path) -> None:
    """Raise if a label holds values other than class indices and the ignore index."""
    values = np.unique(label)
    outside = (values < 0) | (values >= info.num_classes)
    bad = values[outside & (values != info.ignore_index)]
    if bad.size:
        shown = ", ".join(str(value) for value in bad[:8])
        raise DataError(
            f"label {path} holds values {shown} outside the {info.num_classes} classes of "
            f"{info.name} (0–{info.num_classes - 1}) and ignore {info.ignore_index}"
        )


def read_split_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every non-empty line of a split list file, read as UTF-8 with or
    without a byte-order mark."""
    if not path.is_file():
        raise DataError(f"split file {path} does not exist; check data.root and the split name")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"split file {path} is not UTF-8 text; save it as UTF-8") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    lines = [(number, line) for number, line in lines if line]
    if not lines:
        raise DataError(f"split file {path} lists no images")
    return lines


def check_unique_ids(path: Path, numbered_ids: Iterable[tuple[int, str]]) -> None:
    """Raise if a split list names a sample on more than one line (training would see it, and
    evaluation would score it, more than once); the error names the first such id and its
    lines."""
    lines_of: dict[str, list[int]] = defaultdict(list)
    for number, sample_id in numbered_ids:
        lines_of[sample_id].append(number)
    repeated = {sample_id: lines for sample_id, lines in lines_of.items() if len(lines) > 1}
    if repeated:
        sample_id, lines = next(iter(repeated.items()))
        more = f" (and {len(repeated) - 1} more repeated ids)" if len(repeated) > 1 else ""
        raise DataError(
            f"split file {path} lists {sample_id} on lines {', '.join(map(str, lines))}{more}; "
            "keep one line per sample"
        )


def read_split_file(path: Path) -> list[str]:
    """The ids of a split list file: its non-empty lines, each id listed once."""
    lines = read_split_lines(path)
    check_unique_ids(path, lines)
    return [sample_id for _, sample_id in lines]

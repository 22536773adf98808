"""Reading a ``.caffemodel`` without Caffe: a small protobuf wire-format reader for NetParameter.

Only what weight conversion needs is decoded: every layer's name, type and parameter blobs. Field
numbers, from BVLC ``src/caffe/proto/caffe.proto`` (the same in the weiliu89 ``fcn`` and ``ssd``
branches):

- ``NetParameter``: ``name = 1``, ``layers = 2`` (``V1LayerParameter``, deprecated),
  ``layer = 100`` (``LayerParameter``);
- ``LayerParameter``: ``name = 1``, ``type = 2`` (string), ``blobs = 7``;
- ``V1LayerParameter``: ``name = 4``, ``type = 5`` (``LayerType`` enum), ``blobs = 6``;
- ``BlobProto``: legacy 4-D ``num = 1``, ``channels = 2``, ``height = 3``, ``width = 4``;
  ``data = 5`` (float, packed), ``diff = 6`` (skipped), ``shape = 7`` (``BlobShape``),
  ``double_data = 8`` (double, packed), ``double_diff = 9`` (skipped);
- ``BlobShape``: ``dim = 1`` (int64, packed).

Repeated numbers are read packed or unpacked (protobuf parsers accept both); long runs of packed or
unpacked floats are decoded with ``numpy.frombuffer``, so a 500 MB file converts in seconds. Work
is linear in the file's size whatever its layout, and a blob whose shape does not fit its values (or
no array could have) is a damaged file.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parsenet.errors import ParsenetError

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
# NetParameter
NET_NAME, NET_V1_LAYERS, NET_LAYERS = 1, 2, 100
# LayerParameter / V1LayerParameter: (name, type, blobs)
LAYER_FIELDS = (1, 2, 7)
V1_LAYER_FIELDS = (4, 5, 6)
# BlobProto
BLOB_LEGACY_DIMS = (1, 2, 3, 4)
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1
# V1LayerParameter.LayerType values of the layers that carry weights.
V1_TYPES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution"}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SHOWN_DIMS = 6  # dimensions of a bad blob shape shown in a message
FIRST_WINDOW = 64  # unpacked values looked at first for the end of their run


class CaffeModelError(ParsenetError):
    """A ``.caffemodel`` is missing, damaged, or does not hold the expected layers."""


class WireError(Exception):
    """The bytes are not valid protobuf wire format (or end too early)."""


@dataclass(frozen=True)
class CaffeLayer:
    """One layer of a Caffe net: its name, type and parameter blobs (float32, Caffe's shapes)."""

    name: str
    type: str
    blobs: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class CaffeNet:
    """The layers of a ``.caffemodel`` in file order, and the file's SHA-1."""

    name: str
    layers: tuple[CaffeLayer, ...]
    sha1: str

    def weighted_layers(self) -> dict[str, CaffeLayer]:
        """Layers that carry blobs, by name."""
        return {layer.name: layer for layer in self.layers if layer.blobs}


def read_varint(buffer: bytes, position: int, end: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``position``; returns the value and the next position."""
    value = shift = 0
    while True:
        if position >= end:
            raise WireError("a number runs past the end of its message")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise WireError("a number is longer than 10 bytes")


def next_field(buffer: bytes, position: int, end: int) -> tuple[int, int, int, int]:
    """Decode the field that starts at ``position`` of the message ending at ``end``.

    Returns ``(field number, wire type, value, next position)``: for a varint ``value`` is the
    number; for fixed32/fixed64 and length-delimited fields it is the payload's offset (the
    payload is ``buffer[value:next position]``).
    """
    key, position = read_varint(buffer, position, end)
    field, wire_type = key >> 3, key & 7
    if field == 0:
        raise WireError("field number 0")
    if wire_type == VARINT:
        value, position = read_varint(buffer, position, end)
        return field, wire_type, value, position
    if wire_type == LENGTH_DELIMITED:
        length, position = read_varint(buffer, position, end)
    elif wire_type in (FIXED32, FIXED64):
        length = 4 if wire_type == FIXED32 else 8
    else:
        raise WireError(f"unsupported wire type {wire_type}")
    if position + length > end:
        raise WireError("a field runs past the end of its message")
    return field, wire_type, position, position + length


def iter_fields(buffer: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Every field of the message in ``buffer[start:end]``, as :func:`next_field` decodes it."""
    position = start
    while position < end:
        field, wire_type, value, position = next_field(buffer, position, end)
        yield field, wire_type, value, position


def packed_varints(buffer: bytes, start: int, end: int) -> list[int]:
    """The varints packed in ``buffer[start:end]``."""
    values, position = [], start
    while position < end:
        value, position = read_varint(buffer, position, end)
        values.append(value)
    return values


def unpacked_run(buffer: bytes, start: int, end: int, key: int, dtype: np.dtype) -> np.ndarray:
    """Decode the run of consecutive unpacked values (a one-byte ``key`` before each ``dtype``
    value) that begins at ``start``: the unpacked form of a repeated float or double.

    The run's end is found in windows that double in size, so the bytes looked at are at most
    twice the run's own (or one first window), never the rest of the message: however many
    short runs a blob holds, the work stays linear in its size.
    """
    width = dtype.itemsize + 1
    available = (end - start) // width
    window = FIRST_WINDOW
    while True:
        count = min(window, available)
        records = np.frombuffer(buffer, np.uint8, count * width, start).reshape(count, width)
        untagged = np.flatnonzero(records[:, 0] != key)
        if untagged.size or count == available:
            run = int(untagged[0]) if untagged.size else count
            return records[:run, 1:].copy().view(dtype).reshape(-1)
        window *= 2


# Blob value fields: field number → (little-endian dtype, wire type of one unpacked value).
BLOB_NUMBERS = {BLOB_DATA: (np.dtype("<f4"), FIXED32), BLOB_DOUBLE_DATA: (np.dtype("<f8"), FIXED64)}


def read_blob(buffer: bytes, start: int, end: int) -> np.ndarray:
    """Decode one ``BlobProto`` into a float32 array of its shape (``shape`` if present, else the
    legacy ``num × channels × height × width``, as Caffe's ``Blob::FromProto``)."""
    chunks: list[np.ndarray] = []
    shape: list[int] | None = None
    legacy: dict[int, int] = {}
    position = start
    while position < end:
        key_position = position
        field, wire_type, value, position = next_field(buffer, position, end)
        if field in BLOB_NUMBERS:
            dtype, unpacked_type = BLOB_NUMBERS[field]
            if wire_type == LENGTH_DELIMITED:
                if (position - value) % dtype.itemsize:
                    raise WireError("packed blob values do not fill whole numbers")
                count = (position - value) // dtype.itemsize
                chunks.append(np.frombuffer(buffer, dtype, count, value))
            elif wire_type == unpacked_type:
                run = unpacked_run(buffer, key_position, end, buffer[key_position], dtype)
                chunks.append(run)
                position = key_position + run.size * (dtype.itemsize + 1)
            else:
                raise WireError(f"blob values with wire type {wire_type}")
        elif field == BLOB_SHAPE and wire_type == LENGTH_DELIMITED:
            shape = read_shape(buffer, value, position)
        elif field in BLOB_LEGACY_DIMS and wire_type == VARINT:
            legacy[field] = value
    if shape is None:
        shape = [legacy.get(field, 0) for field in BLOB_LEGACY_DIMS] if legacy else []
    data = np.concatenate(chunks or [np.zeros(0, np.float32)]).astype(np.float32, copy=False)
    return shaped(data, shape)


def shaped(data: np.ndarray, shape: list[int]) -> np.ndarray:
    """``data`` in a blob's ``shape``: its dimensions multiply to the number of values (exactly,
    with no 64-bit wrap-around) and make an array NumPy can hold."""
    shown = ", ".join(map(str, shape[:SHOWN_DIMS])) + (", …" if len(shape) > SHOWN_DIMS else "")
    if math.prod(shape) != data.size:
        raise WireError(f"a blob of shape ({shown}) holds {data.size} values")
    try:
        return data.reshape(shape)
    except ValueError:  # a dimension beyond what an array can have, next to a zero
        raise WireError(f"a blob of shape ({shown}) is not a possible array") from None


def read_shape(buffer: bytes, start: int, end: int) -> list[int]:
    """Decode a ``BlobShape``: its ``dim`` values, packed or not."""
    dims: list[int] = []
    for field, wire_type, value, position in iter_fields(buffer, start, end):
        if field == SHAPE_DIM and wire_type == LENGTH_DELIMITED:
            dims.extend(packed_varints(buffer, value, position))
        elif field == SHAPE_DIM and wire_type == VARINT:
            dims.append(value)
    return dims


def read_layer(buffer: bytes, start: int, end: int, fields: tuple[int, int, int]) -> CaffeLayer:
    """Decode a ``LayerParameter`` or ``V1LayerParameter`` (``fields``: its name, type and blobs
    field numbers)."""
    name_field, type_field, blobs_field = fields
    name, kind, blobs = "", "", []
    for field, wire_type, value, position in iter_fields(buffer, start, end):
        if field == name_field and wire_type == LENGTH_DELIMITED:
            name = decode_text(buffer[value:position])
        elif field == type_field and wire_type == LENGTH_DELIMITED:
            kind = decode_text(buffer[value:position])
        elif field == type_field and wire_type == VARINT:
            kind = V1_TYPES.get(value, f"V1 type {value}")
        elif field == blobs_field and wire_type == LENGTH_DELIMITED:
            blobs.append(read_blob(buffer, value, position))
    return CaffeLayer(name, kind, tuple(blobs))


def decode_text(raw: bytes) -> str:
    """A protobuf string field (UTF-8; undecodable bytes are replaced, never fatal)."""
    return raw.decode("utf-8", errors="replace")


def parse_net(buffer: bytes) -> tuple[str, list[CaffeLayer]]:
    """Decode a serialised ``NetParameter``: the net's name and its layers in file order."""
    name, layers = "", []
    for field, wire_type, value, position in iter_fields(buffer, 0, len(buffer)):
        if field == NET_NAME and wire_type == LENGTH_DELIMITED:
            name = decode_text(buffer[value:position])
        elif field == NET_LAYERS and wire_type == LENGTH_DELIMITED:
            layers.append(read_layer(buffer, value, position, LAYER_FIELDS))
        elif field == NET_V1_LAYERS and wire_type == LENGTH_DELIMITED:
            layers.append(read_layer(buffer, value, position, V1_LAYER_FIELDS))
    return name, layers


def read_caffemodel(path: str | Path) -> CaffeNet:
    """Read a binary ``.caffemodel`` (a serialised ``NetParameter``).

    Raises:
        CaffeModelError: the file is missing or unreadable, is HDF5, is truncated, is not a
            NetParameter, or has no (or ambiguously named) weighted layers.
    """
    path = Path(path)
    if not path.is_file():
        raise CaffeModelError(
            f"{path}: no such file; give the path of the .caffemodel (e.g. "
            "VGG_VOC2012ext.caffemodel or VGG_ILSVRC_16_layers_fc_reduced.caffemodel)"
        )
    try:
        buffer = path.read_bytes()
    except OSError as error:
        raise CaffeModelError(f"{path} cannot be read: {error.strerror or error}") from None
    if buffer.startswith(HDF5_SIGNATURE):
        raise CaffeModelError(
            f"{path} is an HDF5 snapshot (.caffemodel.h5); convert the binary protobuf "
            ".caffemodel instead (Caffe's snapshot_format: BINARYPROTO)"
        )
    try:
        name, layers = parse_net(buffer)
    except WireError as error:
        raise CaffeModelError(
            f"{path} is not a complete Caffe NetParameter ({error}); the file is truncated or "
            "not a binary .caffemodel — download it again and check its sha1"
        ) from None
    weighted = [layer.name for layer in layers if layer.blobs]
    if not weighted:
        raise CaffeModelError(
            f"{path} holds no layers with weights; is it a .caffemodel (not a .prototxt)?"
        )
    repeated = sorted(name for name, count in Counter(weighted).items() if count > 1)
    if repeated:
        raise CaffeModelError(
            f"{path} has several layers with weights named {', '.join(repeated)}; layer names "
            "must be unique to map them"
        )
    return CaffeNet(name, tuple(layers), hashlib.sha1(buffer).hexdigest())

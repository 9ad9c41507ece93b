"""An ONNX file's ``metadata_props`` read straight from its protobuf encoding, without onnx.

Every ``fcn-deploy run`` on the CPU reads the model's metadata before its first frame (the
engine choice is keyed on the training scale it records). The ``onnx`` package would do it
in one call, but importing it costs about a second on a small board (it pulls in
``ml_dtypes``), more than the rest of start-up together, and ONNX Runtime's reader needs a
whole session. The metadata sits in the top level of the file, so this reads the top-level
fields one by one, skips the graph (and every other field) by its length without reading it,
and decodes only field 14, ``metadata_props``, a list of ``StringStringEntryProto``
(``key`` = 1, ``value`` = 2). See ``onnx/onnx.proto`` and protobuf's encoding guide.
"""
from __future__ import annotations

import os
from typing import BinaryIO, Dict, Optional, Tuple

from ..errors import FcnDeployError

METADATA_PROPS = 14  # ModelProto.metadata_props
# ModelProto fields and the wire type each must have (0: varint, 2: length-delimited): a file
# whose known fields have another wire type is not an ONNX model.
KNOWN_WIRE_TYPES = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class NotOnnx(ValueError):
    """The bytes are not a protobuf-encoded ONNX ModelProto."""


def _varint(read, where: str) -> Optional[int]:
    """The next base-128 varint from ``read`` (a ``read(n)`` function); None at the end of the
    data only where a field tag would start (anywhere else the data is cut short)."""
    value, shift = 0, 0
    while True:
        byte = read(1)
        if not byte:
            if shift == 0 and where == "field tag":
                return None
            raise NotOnnx(f"cut short in a {where}")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise NotOnnx(f"a {where} longer than 10 bytes")


def _fields(data: bytes):
    """``(field number, wire type, value)`` of a small message held in memory."""
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        chunk = data[position:position + n]
        position += len(chunk)
        return chunk

    while True:
        tag = _varint(read, "field tag")
        if tag is None:
            return
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            yield number, wire, _varint(read, "number")
        elif wire == _LENGTH:
            length = _varint(read, "length")
            value = read(length or 0)
            if len(value) != length:
                raise NotOnnx("a field runs past the end of its message")
            yield number, wire, value
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if len(read(size)) != size:
                raise NotOnnx("cut short in a fixed-size field")
            yield number, wire, None
        else:
            raise NotOnnx(f"field {number} has wire type {wire}, which no ONNX field has")


def _entry(data: bytes) -> Tuple[str, str]:
    """One ``StringStringEntryProto``: ``(key, value)``."""
    key, value = b"", b""
    for number, wire, content in _fields(data):
        if number in (1, 2) and wire != _LENGTH:
            raise NotOnnx("a metadata entry whose key or value is not a string")
        if number == 1:
            key = content
        elif number == 2:
            value = content
    try:
        return key.decode("utf-8"), value.decode("utf-8")
    except UnicodeDecodeError:
        raise NotOnnx("a metadata entry that is not UTF-8 text") from None


def read_props(handle: BinaryIO, size: int) -> Dict[str, str]:
    """``metadata_props`` of the ModelProto in ``handle`` (``size`` bytes from its position);
    later entries win over earlier ones with the same key, as in a dict built from the list."""
    props: Dict[str, str] = {}
    end = handle.tell() + size
    while handle.tell() < end:
        tag = _varint(handle.read, "field tag")
        if tag is None:
            break
        number, wire = tag >> 3, tag & 7
        if number == 0 or KNOWN_WIRE_TYPES.get(number, wire) != wire:
            raise NotOnnx(f"field {number} with wire type {wire} at byte {handle.tell()}")
        if wire == _VARINT:
            _varint(handle.read, "number")
        elif wire == _LENGTH:
            length = _varint(handle.read, "length") or 0
            if handle.tell() + length > end:
                raise NotOnnx(f"field {number} runs {handle.tell() + length - end} bytes past the end of the file")
            if number == METADATA_PROPS:
                key, value = _entry(handle.read(length))
                props[key] = value
            else:
                handle.seek(length, os.SEEK_CUR)
        elif wire in (_FIXED64, _FIXED32):
            handle.seek(8 if wire == _FIXED64 else 4, os.SEEK_CUR)
        else:
            raise NotOnnx(f"field {number} has wire type {wire}, which no ONNX field has")
    if handle.tell() > end:
        raise NotOnnx("the last field runs past the end of the file")
    return props


def onnx_metadata_props(path: str) -> Dict[str, str]:
    """The ``metadata_props`` of the ONNX file ``path`` as a dict, or one-line errors for a
    missing, unreadable or non-ONNX file."""
    if not os.path.isfile(path):
        raise FcnDeployError(f"model file not found: {path}")
    try:
        with open(path, "rb") as handle:
            return read_props(handle, os.path.getsize(path))
    except NotOnnx as exc:
        raise FcnDeployError(f"cannot read ONNX file {path}: not an ONNX model ({exc})") from None
    except OSError as exc:
        raise FcnDeployError(f"cannot read ONNX file {path}: {exc.strerror or exc}") from None

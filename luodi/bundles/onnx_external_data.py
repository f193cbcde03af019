"""The external-data file names an ONNX model refers to, read from the protobuf wire format.

A bundle's runtime has no `onnx` package (only onnxruntime, numpy and tokenizers), yet before ONNX Runtime
opens a model we must know every file its tensors point at, so none can reach outside the bundle. This
walks exactly the messages that can hold a TensorProto (graph initializers, sparse initializers, node
attributes, subgraphs, functions, training graphs) and reads each tensor's `external_data` "location".
Raw tensor bytes are skipped by length, never parsed.
"""

import mmap
from pathlib import Path

from ..errors import CorruptModelError

# field numbers from onnx.proto: (message, field) -> message type of that field
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_CHILDREN = {
    "model": {_MODEL_GRAPH: "graph", _MODEL_TRAINING: "training", _MODEL_FUNCTIONS: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
_WIRE_VARINT, _WIRE_64, _WIRE_LEN, _WIRE_32 = 0, 1, 2, 5


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, start, end) of each length-delimited field of the message in buf[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        wire = key & 7
        if wire == _WIRE_VARINT:
            _, pos = _varint(buf, pos, end)
        elif wire == _WIRE_64:
            pos += 8
        elif wire == _WIRE_32:
            pos += 4
        elif wire == _WIRE_LEN:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise ValueError("field runs past its message")
            yield key >> 3, pos, pos + length
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("message runs past its end")


def _entry(buf, start: int, end: int) -> tuple[str, str]:
    parts = {number: bytes(buf[s:e]).decode("utf-8") for number, s, e in _fields(buf, start, end)}
    return parts.get(1, ""), parts.get(2, "")


def _walk(buf, kind: str, start: int, end: int, found: set) -> None:
    children = _CHILDREN.get(kind, {})
    for number, s, e in _fields(buf, start, end):
        child = children.get(number)
        if child == "entry":
            key, value = _entry(buf, s, e)
            if key == "location":
                found.add(value)
        elif child:
            _walk(buf, child, s, e, found)


def external_data_locations(model_path: Path) -> set[str]:
    """Every external-data location (as written, relative to the model's folder) in an .onnx file."""
    path = Path(model_path)
    found: set[str] = set()
    try:
        with open(path, "rb") as f:
            if path.stat().st_size == 0:
                raise ValueError("empty file")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                _walk(buf, "model", 0, len(buf), found)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptModelError(f"{path}: not a readable ONNX model ({e})") from None
    return found

"""A safetensors file's header, checked by luodi itself before any library reads the file: a damaged or
hostile file gets a one-line CorruptModelError naming it instead of a traceback from deep inside a loader.

The format: 8 bytes of little-endian header length N, N bytes of JSON (an object: tensor name -> dtype, shape,
data_offsets; optionally "__metadata__", strings only), then the data section, which the tensors' byte ranges
must cover exactly, in order, without holes or overlaps (the safetensors library's own rule).
"""

import json
import math
import stat
import struct
from pathlib import Path

from ..errors import CorruptModelError

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _read_header(path: Path, size: int) -> tuple[dict, int]:
    """The header's JSON object and length, the length bounded by the file and MAX_HEADER_BYTES (JSON that starts
    with '{' and parses is an object)."""
    with open(path, "rb") as f:
        if size < 8:
            raise ValueError(f"{size} bytes, shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", f.read(8))
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise ValueError(f"header length {length} exceeds the file ({size} bytes) or {MAX_HEADER_BYTES} bytes")
        raw = f.read(length)
    if not raw.startswith(b"{"):
        raise ValueError("header does not start with '{'")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"header is not UTF-8 JSON ({e})") from None
    return header, length


def _check_metadata(metadata) -> None:
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("__metadata__ must map strings to strings")


def _tensor_range(name: str, entry) -> tuple[int, int]:
    """A tensor entry's [begin, end) byte range in the data section, after its dtype, shape and size are checked."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"tensor {name!r}: needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"tensor {name!r}: shape {shape!r} is not a list of integers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise ValueError(f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise ValueError(f"tensor {name!r}: {offsets[1] - offsets[0]} bytes, but {dtype} {shape} needs {expected}")
    return offsets[0], offsets[1]


def _check_coverage(ranges: list, data_bytes: int) -> None:
    """The sorted ((begin, end), name) ranges tile the data section exactly: no gap, overlap or spare byte."""
    end = 0
    for (begin, stop), name in ranges:
        if begin != end:
            raise ValueError(f"tensor {name!r} starts at byte {begin} of the data, expected {end} (a gap or an "
                             "overlap)")
        end = stop
    if end != data_bytes:
        raise ValueError(f"the tensors cover {end} bytes; the data section has {data_bytes} (truncated or padded)")


def check_safetensors(path: Path) -> dict:
    """The tensors of a safetensors file ({name: {dtype, shape, data_offsets}}) after checking its whole header
    against the file's size; CorruptModelError naming the file if anything is off."""
    path = Path(path)
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise CorruptModelError(f"{path}: not a regular file")
    try:
        header, length = _read_header(path, info.st_size)
        _check_metadata(header.pop("__metadata__", {}))
        ranges = sorted((_tensor_range(name, entry), name) for name, entry in header.items())
        _check_coverage(ranges, info.st_size - 8 - length)
    except ValueError as e:
        raise CorruptModelError(f"{path}: not a valid safetensors file: {e}") from None
    return header

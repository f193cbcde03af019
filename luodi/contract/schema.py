"""Untrusted JSON -> frozen dataclasses, field by field.

Each dataclass field declares its type (int, float, str, bool, `X | None`, `list[X]`, `dict[str, X]`, a free
JSON object `dict`, or another dataclass) and, through `rule()`, its range, its allowed values or a check of
its own. `read()` walks the JSON once, converts each value to the declared type and raises a one-line
ManifestMismatchError naming the first field that is missing, of the wrong type or out of range. A field
with a default may be left out; only a field typed `X | None` may be null. Keys a dataclass does not declare
are ignored: nothing reads them. No value is ever evaluated or imported.
"""

import dataclasses
import math
import types
import typing

from ..errors import ManifestMismatchError

_MISSING = dataclasses.MISSING


def rule(lo=None, hi=None, choices=None, check=None, default=_MISSING, default_factory=_MISSING):
    """A dataclass field with its constraints: numbers in [lo, hi], values among `choices`, and `check(value)`
    returning an error text (or None) for anything else."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "check": check}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _fail(where: str, path: str, problem: str):
    raise ManifestMismatchError(f"{where}: manifest field {path!r} {problem}")


def _scalar(kind, value, where: str, path: str):
    if kind is bool:
        if not isinstance(value, bool):
            _fail(where, path, f"must be true or false, got {value!r:.60}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, path, f"must be an integer, got {value!r:.60}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            _fail(where, path, f"must be a finite number, got {value!r:.60}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            _fail(where, path, f"must be a string, got {value!r:.60}")
        return value
    raise TypeError(f"unsupported schema type {kind!r}")


def _convert(kind, value, where: str, path: str):
    """`value` as the declared `kind`, or the error naming `path`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if value is None:
            _fail(where, path, "must not be null")
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where, path)
    if origin is list:
        if not isinstance(value, list):
            _fail(where, path, f"must be a list, got {type(value).__name__}")
        return tuple(_convert(args[0], item, where, f"{path}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            _fail(where, path, f"must be an object, got {type(value).__name__}")
        return {k: _convert(args[1], v, where, f"{path}.{k}") for k, v in value.items()}
    if kind is dict:
        if not isinstance(value, dict):
            _fail(where, path, f"must be an object, got {type(value).__name__}")
        return value
    if dataclasses.is_dataclass(kind):
        return read(kind, value, where, path)
    return _scalar(kind, value, where, path)


def _check(meta: dict, value, where: str, path: str) -> None:
    if value is None:
        return
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if meta.get("choices") is not None and item not in meta["choices"]:
            _fail(where, path, f"must be one of {', '.join(map(str, meta['choices']))}, got {item!r:.60}")
        if meta.get("lo") is not None and item < meta["lo"]:
            _fail(where, path, f"must be at least {meta['lo']}, got {item!r}")
        if meta.get("hi") is not None and item > meta["hi"]:
            _fail(where, path, f"must be at most {meta['hi']}, got {item!r}")
    if meta.get("check") is not None and (problem := meta["check"](value)):
        _fail(where, path, problem)


def read(cls, data, where: str, path: str = ""):
    """An instance of dataclass `cls` from the JSON object `data`, every declared field checked."""
    if not isinstance(data, dict):
        _fail(where, path or cls.__name__, f"must be an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        sub = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            if f.default is _MISSING and f.default_factory is _MISSING:
                _fail(where, sub, "is missing")
            continue
        value = _convert(hints[f.name], data[f.name], where, sub)
        _check(f.metadata, value, where, sub)
        values[f.name] = value
    return cls(**values)


def to_json(instance) -> dict:
    """The JSON object of a dataclass read by `read()` (tuples back to lists, None fields kept)."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(instance)

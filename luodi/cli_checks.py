"""The command line's guards: argument types that refuse a bad value in one line (argparse's exit code 2) before
any work starts, the one-line message for a user's mistake, and strict JSON output."""

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

from .errors import LuodiError, one_line
from .inputs import check_text
from .paths import cache_dir
from .runtimes import check_threads


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (the usage stays in --help) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _checked(check):
    """An argparse type from a check that raises LuodiError: the error becomes argparse's one-line refusal."""
    def parse(text: str):
        try:
            return check(text)
        except LuodiError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def at_least(low: int):
    """An argparse type for integers >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def finite_float(text: str) -> float:
    """An argparse type for real numbers other than NaN and the infinities."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type for finite numbers > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def fraction_or_percent(text: str) -> float:
    """An argparse type for a non-negative fraction, given as 0.03 or as 3% (a bare 3 is refused: 300% or 3%?)."""
    percent = text.strip().endswith("%")
    value = finite_float(text.strip().removesuffix("%")) / (100 if percent else 1)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    if not percent and value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} would be {value:.0%}: write a percentage (e.g. 3%) or a "
                                         "fraction below 1 (e.g. 0.03)")
    return value


thread_count = _checked(lambda text: check_threads(positive_int(text)))
utf8_text = _checked(check_text)


def out_path(text: str) -> Path:
    """An output path whose nearest existing folder can be written in (tried): not under a file, not read-only."""
    path = Path(text)
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {parent} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=parent):  # unnamed where the system allows: nothing is left behind
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path}: cannot write in {parent} ({e.strerror})") from None
    return path


def png_path(text: str) -> Path:
    """An output path (out_path's checks) for a chart: FILE.png, not a folder."""
    path = out_path(text)
    if path.suffix.lower() != ".png" or path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: charts are written as PNG files; give a FILE.png")
    return path


def os_error_line(e: OSError) -> str:
    """What a failed read or write of a path says: the path, the system's reason, and where the cache is set
    when the path is in it."""
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    line = ": ".join([*paths, e.strerror or str(e)])
    if e.filename is not None and Path(os.path.abspath(e.filename)).is_relative_to(cache_dir().absolute()):
        line += f" (luodi's cache {cache_dir()}: set LUODI_CACHE to a writable folder)"
    return line


def print_json(obj) -> None:
    """obj as one line of strict JSON; NaN and infinities (nothing measured, e.g. no new tokens) become null."""
    print(json.dumps(_finite(obj), allow_nan=False, ensure_ascii=False))


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj

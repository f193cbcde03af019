"""`luodi bundle`: an export folder -> one self-contained artifact (a tar archive or a folder) for a device."""

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

from ..contract.manifest import FileEntry, Manifest, bundle_json
from ..errors import LuodiError, ManifestMismatchError
from ..fileio import new_temp_file, sha256_file, write_bytes_atomic
from ..manifest import MANIFEST, read_manifest_json
from ..outputs import BUNDLE_ARCHIVE, BUNDLE_FOLDER, claim_output, output_folder
from ..tokenizer import Tokenizer
from .checks import check_folder
from .readme import device_readme
from .requirements import requirements_for

README = "README.md"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_tar_name(path: Path) -> bool:
    """Whether `path` names a tar archive (else the bundle is written as a folder)."""
    return Path(path).name.endswith(TAR_SUFFIXES)


def bundle_manifest(export: dict, readme: bytes, requires: dict) -> tuple[Manifest, bytes]:
    """The bundle's manifest (contract.manifest.bundle_json: the export's JSON as written, the runtime versions
    it requires, and the files with the README added), checked as a reader checks it, and its bytes."""
    added = {README: FileEntry(len(readme), hashlib.sha256(readme).hexdigest())}
    content = bundle_json(export, added, requires, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return Manifest.from_json(content, "the bundle's manifest"), (json.dumps(content, indent=1) + "\n").encode()


class _HashingReader:
    """A file object that hashes what is read through it (a file is checked as it is copied into a tar)."""

    def __init__(self, f):
        self.f, self.sha256 = f, hashlib.sha256()

    def read(self, size=-1):
        data = self.f.read(size)
        self.sha256.update(data)
        return data


def _tar_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    return info


def _write_tar(export_dir: Path, manifest: Manifest, raw: bytes, readme: bytes, out: Path, force: bool) -> None:
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    mtime = time.time()
    fd, tmp = new_temp_file(out)
    os.close(fd)
    try:
        with tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_tar_info(MANIFEST, len(raw), mtime), io.BytesIO(raw))  # first: read before the rest
            tar.addfile(_tar_info(README, len(readme), mtime), io.BytesIO(readme))
            for name, entry in manifest.files.items():
                if name == README:
                    continue
                with open(export_dir / name, "rb") as f:
                    reader = _HashingReader(f)
                    tar.addfile(_tar_info(name, entry.bytes, mtime), reader)
                if reader.sha256.hexdigest() != entry.sha256:
                    raise ManifestMismatchError(f"{export_dir}: {name} changed while it was being bundled")
        os.chmod(tmp, 0o644)
        claim_output(out, BUNDLE_ARCHIVE, force)  # again: something may have appeared there meanwhile
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_folder(export_dir: Path, manifest: Manifest, raw: bytes, readme: bytes, out: Path, force: bool) -> None:
    with output_folder(out, BUNDLE_FOLDER, force) as tmp:
        for name, entry in manifest.files.items():
            if name != README:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(export_dir / name, tmp / name)
                if sha256_file(tmp / name) != entry.sha256:
                    raise ManifestMismatchError(f"{export_dir}: {name} changed while it was being bundled")
        (tmp / README).write_bytes(readme)
        write_bytes_atomic(tmp / MANIFEST, raw)


def make_bundle(export_dir: Path, out: Path, force: bool = False) -> Path:
    """Bundle a checked export folder into `out` (a .tar/.tar.gz/.tgz archive, else a folder), atomically.

    The export is verified first (every checksum, every path its model opens), so a damaged export is never
    packed; the bundle records the runtime versions installed here as its minimum requirements. An existing
    `out` is replaced only when it is an earlier bundle of the same form and `force` is set (luodi.outputs)."""
    export_dir, out = Path(export_dir), Path(out)
    if out.resolve() == export_dir.resolve() or out.resolve().is_relative_to(export_dir.resolve()):
        raise LuodiError(f"--out {out} must be outside the export folder {export_dir}")
    claim_output(out, BUNDLE_ARCHIVE if is_tar_name(out) else BUNDLE_FOLDER, force)
    export_json = read_manifest_json(export_dir)
    export = Manifest.from_json(export_json, str(export_dir))
    check_folder(export_dir, export)
    if README in export.files:
        raise LuodiError(f"{export_dir}: the export already has a {README}; bundles write their own")
    out.parent.mkdir(parents=True, exist_ok=True)
    requires = requirements_for(export.backend)
    chat = Tokenizer(export_dir).chat_template is not None
    readme = device_readme(export, requires, out.name, chat).encode()
    manifest, raw = bundle_manifest(export_json, readme, requires)
    (_write_tar if is_tar_name(out) else _write_folder)(export_dir, manifest, raw, readme, out, force)
    return out

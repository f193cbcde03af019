"""Atomic writes: a failed or interrupted write never leaves a file or folder that looks valid.

Every temporary sibling is named `.<final name>.partial-<pid>-<random>` (a folder being replaced moves aside
as `.<final name>.old-<pid>-<random>`): hidden, and carrying the id of the process that made it, so the next
write into the same folder removes the leftovers of a killed run and never touches a running one's.
"""

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

_TEMPORARY = re.compile(r"\..+\.(partial|old)-(?P<pid>\d+)-[A-Za-z0-9_]+")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks so large weight files do not sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ordinary_permissions(path: Path) -> None:
    """Give a file the permissions the umask allows (some writers create theirs 0600)."""
    os.chmod(path, 0o666 & ~_umask())


def temp_prefix(final: Path, role: str = "partial") -> str:
    """Name prefix of a temporary sibling of `final` (a random suffix follows): `.<name>.<role>-<pid>-`."""
    return f".{Path(final).name}.{role}-{os.getpid()}-"


def _process_gone(pid: int) -> bool:
    """Whether no process has this id (only POSIX can tell; elsewhere every process counts as running)."""
    if os.name != "posix" or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's process: it exists
        return False
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_temporaries(folder: Path) -> None:
    """Remove luodi's temporaries in `folder` (by their name pattern) whose creating process is gone: what a
    killed run left behind. A running process's temporaries, and every other file, are left alone."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry.name)
            if match and _process_gone(int(match["pid"])):
                _remove(Path(entry.path))


def new_temp_file(final: Path) -> tuple[int, Path]:
    """An open descriptor and the path of a new temporary sibling of `final` (stale ones cleared first)."""
    final = Path(final)
    remove_stale_temporaries(final.parent)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=temp_prefix(final))
    return fd, Path(tmp)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes to path through a temporary sibling and a rename."""
    path = Path(path)
    fd, tmp = new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        ordinary_permissions(tmp)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write text (UTF-8) to path through a temporary sibling and a rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _move_aside(path: Path) -> Path:
    old = path.parent / f"{temp_prefix(path, 'old')}{secrets.token_hex(4)}"
    os.replace(path, old)
    return old


def discard(path: Path) -> None:
    """Remove a file or folder in one step (renamed aside, then deleted; a killed run's leftover is a stale
    temporary the next write removes). Callers decide what may be removed (luodi.outputs)."""
    _remove(_move_aside(Path(path)))


@contextlib.contextmanager
def atomic_folder(final: Path, check: Callable[[Path], None] | None = None):
    """Yield a temporary sibling folder to fill; on success it replaces `final` in one rename.

    `check(final)`, when given, runs just before an existing `final` would be replaced and may refuse by
    raising. On any exception (or Ctrl-C) the temporary folder is removed and `final` is left as it was.
    A link at `final` is replaced itself, never the folder it points to.
    """
    final = Path(os.path.abspath(final))
    final = final.parent.resolve() / final.name
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_prefix(final)))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; the result is an ordinary folder
    try:
        yield tmp
        old = None
        if final.exists() or final.is_symlink():
            if check is not None:
                check(final)
            old = _move_aside(final)
        os.replace(tmp, final)
        if old is not None:
            _remove(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

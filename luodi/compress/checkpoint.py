"""Checkpoints of a `luodi compress` run, so an interrupted run resumes where it stopped.

They live in a hidden sibling of the output, `.<out name>.compress-run/`: `run.json` (the run's key, a hash
of the model and every argument that changes the result, plus the pruned config and what was measured so
far) and `state.pt` (the student's weights, the optimizer's state and the step reached). A re-run with the
same key continues from `state.pt`; a different key starts afresh (the old checkpoint is discarded). The
folder is removed once the output is written.
"""

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import LuodiError
from ..fileio import discard, new_temp_file, write_text_atomic

_FORMAT = "luodi-compress-run"
STATE = "state.pt"


def run_key(parts: dict) -> str:
    """A hash of what determines a run's result (model hash and the arguments)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def checkpoint_dir(out: Path) -> Path:
    """Where the run writing `out` keeps its checkpoints."""
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}.compress-run"


def open_run(folder: Path, key: str) -> dict | None:
    """The run record of an earlier run with the same key (to resume), else None; another run's checkpoint
    (a different key) is discarded. A folder there that luodi did not write is refused."""
    if not folder.exists() and not folder.is_symlink():
        return None
    try:
        run = json.loads((folder / "run.json").read_text()) if folder.is_dir() and not folder.is_symlink() else None
    except (OSError, ValueError):
        run = None
    if not isinstance(run, dict) or run.get("format") != _FORMAT:
        raise LuodiError(f"{folder} exists and is not a luodi compress checkpoint; move it away")
    if run.get("key") == key and (folder / STATE).is_file():
        return run
    discard(folder)
    return None


def save_run(folder: Path, key: str, record: dict) -> None:
    """Write run.json (the key and what later stages need without recomputing it)."""
    folder.mkdir(exist_ok=True)
    write_text_atomic(folder / "run.json", json.dumps({"format": _FORMAT, "key": key, **record}, indent=1))


def save_state(folder: Path, state: dict) -> None:
    """Write state.pt atomically (a temporary file, then a rename)."""
    fd, tmp = new_temp_file(folder / STATE)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, folder / STATE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_state(folder: Path) -> dict:
    """state.pt, read with torch's weights-only unpickler (tensors and plain containers, no code)."""
    return torch.load(folder / STATE, weights_only=True)

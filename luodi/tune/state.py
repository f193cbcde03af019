"""The tune folder's state file, so an interrupted `luodi tune` resumes: tune-state.json records each finished
export, quality measurement and candidate with the settings that produced it. A rerun skips every record whose
settings equal the current ones; a change of model, workloads or measurement settings (the protocol) measures
everything again, reusing the exports whose model and settings are unchanged. Written atomically after every step, so a kill loses at most the step under way.
"""

import json
from pathlib import Path

from ..errors import LuodiError
from ..fileio import write_text_atomic

STATE = "tune-state.json"
_FORMAT = "luodi-tune-state"
SECTIONS = ("exports", "quality", "candidates")


def _plain(value):
    """`value` as it reads back from JSON (tuples become lists), so records compare equal across runs."""
    return json.loads(json.dumps(value, default=str))


class TuneState:
    """What a tune folder has finished; `get` a record made with the same settings, `put` one and save."""

    def __init__(self, folder: Path, protocol: dict):
        self.path = Path(folder) / STATE
        self.protocol = _plain(protocol)
        self.data = {"format": _FORMAT, "protocol": self.protocol, **{s: {} for s in SECTIONS}}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = None
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                raise LuodiError(f"{self.path} is not a luodi tune state file; move it away or choose another --out")
            if all(isinstance(data.get(s), dict) for s in SECTIONS):
                if data.get("protocol") == self.protocol:
                    self.data = data
                else:  # new measurements; exports carry their own model and settings, so they stay
                    self.data["exports"] = data["exports"]

    def get(self, section: str, name: str, settings: dict) -> dict | None:
        """The record `name` of `section` if it was made with these settings, else None."""
        record = self.data[section].get(name)
        return record["result"] if isinstance(record, dict) and record.get("settings") == _plain(settings) else None

    def put(self, section: str, name: str, settings: dict, result: dict) -> None:
        """Record a finished step and save the file."""
        self.data[section][name] = {"settings": _plain(settings), "result": _plain(result)}
        write_text_atomic(self.path, json.dumps(self.data, indent=1) + "\n")

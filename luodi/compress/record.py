"""compression.json: what `luodi compress` removed, the texts it calibrated, trained and evaluated on, and
the quality it measured; written beside the Hugging Face files, and how luodi recognises its own output."""

import json
from pathlib import Path

from .. import __version__
from ..fileio import write_text_atomic

RECORD = "compression.json"
FORMAT = "luodi-compression"


def write_record(folder: Path, record: dict) -> None:
    """Write compression.json (with its format marker and luodi's version) into an output folder."""
    write_text_atomic(Path(folder) / RECORD, json.dumps({"format": FORMAT, "luodi_version": __version__, **record},
                                                       indent=1) + "\n")


def is_compressed_model(folder: Path) -> bool:
    """Whether `folder` holds a luodi compress output (its compression.json beside a config.json)."""
    try:
        record = json.loads((Path(folder) / RECORD).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == FORMAT and (Path(folder) / "config.json").is_file()

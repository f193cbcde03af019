"""compression.json: what `luodi compress` removed, the texts it calibrated, trained and evaluated on, and
the quality it measured; written beside the Hugging Face files, and how luodi recognises its own output."""

import json
import re
from pathlib import Path

from .. import __version__
from ..errors import CorruptModelError
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


_PROJECTION = re.compile(r"model\.layers\.\d{1,6}\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)")


def low_rank_ranks(folder: Path) -> dict:
    """{projection path: rank} that compression.json's low_rank lists ({} without one). A model folder is
    user input: anything but projection paths with positive integer ranks is refused in one line."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_bytes())
    except ValueError as e:
        raise CorruptModelError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(record, dict) or "low_rank" not in record:
        return {}
    ranks = record["low_rank"].get("ranks") if isinstance(record["low_rank"], dict) else None
    if not isinstance(ranks, dict) or not all(isinstance(k, str) and _PROJECTION.fullmatch(k) and type(v) is int
                                              and v >= 1 for k, v in ranks.items()):
        raise CorruptModelError(f"{path}: low_rank.ranks must map block projections to positive integer ranks")
    return ranks

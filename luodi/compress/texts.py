"""The texts `luodi compress` reads, each from a package the machine already has, never downloaded:

- calibration and distillation: CPython's own reference documentation (`pydoc_data.topics`, the text
  `help()` shows; part of the standard library and of Debian's libpython3.x-stdlib), ~465 K characters
  of English prose with code samples;
- evaluation (held out: neither calibrated nor trained on): the Apache-2.0 and GPL-3 licence texts of
  Debian's base-files (/usr/share/common-licenses), the texts docs/QUANTIZATION.md measures perplexity on.
"""

import platform
from pathlib import Path

from ..errors import LuodiError

TRAINING_TEXT = f"Python {platform.python_version()} standard library: pydoc_data.topics (help() topics)"
EVALUATION_DIR = Path("/usr/share/common-licenses")
EVALUATION_TEXTS = ("Apache-2.0", "GPL-3")


def training_text() -> str:
    """The calibration and distillation text: every help() topic of the running Python, in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def evaluation_texts() -> dict[str, str]:
    """{name: text} of the held-out evaluation texts, or a one-line error where the system lacks them."""
    found = {}
    for name in EVALUATION_TEXTS:
        path = EVALUATION_DIR / name
        try:
            found[name] = path.read_text(encoding="utf-8")
        except OSError as e:
            raise LuodiError(f"{path}: {e.strerror}; luodi compress evaluates on Debian's licence texts "
                             "(package base-files)") from None
    return found


def token_windows(ids: list[int], window: int, limit: int | None = None) -> list[list[int]]:
    """Disjoint windows of `window` token ids (the last one dropped when shorter), at most `limit` of them."""
    windows = [ids[i:i + window] for i in range(0, len(ids) - window + 1, window)]
    return windows[:limit] if limit is not None else windows

"""What users hand luodi, checked before anything uses it: text (strings and text files), chat messages and
token ids. Each check raises BadInputError with a one-line message naming what is wrong."""

import numbers
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from .errors import BadInputError


def check_text(text, what: str = "text") -> str:
    """text itself if it is a str that is valid Unicode (command-line bytes that are not UTF-8 arrive as lone
    surrogates, which no tokenizer can encode)."""
    if not isinstance(text, str):
        raise BadInputError(f"{what} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadInputError(f"{what} is not valid UTF-8 (character {e.start})") from None
    return text


def read_text_file(path, what: str = "text file") -> str:
    """The UTF-8 text of a regular file; a one-line error for a missing path, a folder, a pipe or device (never
    opened: reading one could block), or bytes that are not UTF-8."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BadInputError(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(mode):
        raise BadInputError(f"{what} {path} is {'a folder' if stat.S_ISDIR(mode) else 'not a regular file'}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{what} {path} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") \
            from None


def read_prompts(path) -> list[str]:
    """Prompts from a UTF-8 file, one per line (blank lines skipped), or a one-line error."""
    prompts = [line.strip() for line in read_text_file(path, "prompts file").splitlines() if line.strip()]
    if not prompts:
        raise BadInputError(f"prompts file {path} has no prompts in it (one per line)")
    return prompts


def check_messages(messages) -> list[dict]:
    """Chat messages: a non-empty list of dicts, each with a string role and string content (other keys are the
    chat template's business)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise BadInputError("chat messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadInputError(f"chat message {i} must be a dict with 'role' and 'content', got "
                                f"{type(message).__name__}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                got = "nothing" if key not in message else type(message[key]).__name__
                raise BadInputError(f"chat message {i} needs a string '{key}', got {got}")
            check_text(message[key], f"chat message {i}'s {key}")
    return list(messages)


def check_token_ids(ids, vocab_size: int) -> list[int]:
    """Token ids as a list of ints, each in 0..vocab_size-1 (bools and floats are not token ids)."""
    if isinstance(ids, (str, bytes, dict)) or not isinstance(ids, Iterable):
        raise BadInputError(f"a prompt must be a string, token ids or chat messages, got {type(ids).__name__}")
    ids = list(ids)
    bad = next((t for t in ids if isinstance(t, bool) or not isinstance(t, numbers.Integral)
                or not 0 <= t < vocab_size), None)
    if bad is not None:
        raise BadInputError(f"token ids must be integers in 0..{vocab_size - 1}, got {bad!r}")
    return [int(t) for t in ids]

"""The errors luodi raises on bad input. Each carries a one-line message meant for the user."""


class LuodiError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class UnknownModelError(LuodiError):
    """A model name that is neither a folder, a GGUF file nor a name in configs/models/."""


class UnsupportedArchitectureError(LuodiError):
    """A model whose architecture luodi cannot export."""


class CorruptModelError(LuodiError):
    """A model, GGUF, ONNX or external-data file that is missing, truncated or malformed."""


class ManifestMismatchError(LuodiError):
    """An export folder whose files do not match its manifest.json."""


class BadInputError(LuodiError, ValueError):
    """A prompt, chat message, token id or text file luodi cannot use: invalid UTF-8, a malformed message, a
    folder where a file belongs, chat messages for a model without a chat template, ..."""


class GenerationConfigError(LuodiError, ValueError):
    """Bad generation settings: negative max_new_tokens, temperature < 0, top_p outside (0, 1], ..."""


class ContextLengthError(LuodiError, ValueError):
    """A prompt (plus what is asked to be generated) longer than the model's max context."""


class QualityBudgetError(LuodiError):
    """No quantization recipe keeps the model within the quality budget asked for."""


def one_line(message, limit: int | None = None) -> str:
    """A message as one line (a library's multi-line text joined), cut to `limit` characters if given."""
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."

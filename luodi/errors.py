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


class GenerationConfigError(LuodiError, ValueError):
    """Bad generation settings: negative max_new_tokens, temperature < 0, top_p outside (0, 1], ..."""


class ContextLengthError(LuodiError, ValueError):
    """A prompt (plus what is asked to be generated) longer than the model's max context."""

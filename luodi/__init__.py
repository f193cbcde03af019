"""luodi: export decoder-only LLMs to ONNX with an explicit KV cache and run them fast.

    import luodi
    lm = luodi.load("build/smollm2-135m-ort")
    print(lm.generate("What is the capital of France?", max_new_tokens=64).text)
"""

__version__ = "0.1.0"

from .errors import LuodiError  # noqa: E402


def load(path_or_name, backend: str | None = None, threads: int | None = None, verify: bool = True):
    """A LanguageModel for an export folder (backend from its manifest) or, with backend="torch", for any
    model source (folder, .gguf, registry name) run by the transformers reference."""
    from .api import load as _load

    return _load(path_or_name, backend=backend, threads=threads, verify=verify)


__all__ = ["load", "LuodiError", "__version__"]

"""luodi: export decoder-only LLMs to ONNX with an explicit KV cache and run them fast.

    import luodi
    lm = luodi.load("build/smollm2-135m-ort")
    print(lm.generate("What is the capital of France?", max_new_tokens=64).text)
"""

__version__ = "0.1.0"

from .api import LanguageModel, load  # noqa: E402
from .errors import LuodiError  # noqa: E402


__all__ = ["load", "LanguageModel", "LuodiError", "__version__"]

"""Weight compression for the openvino target: NNCF's compress_weights on the stateful IR (int8, int4; RTN, or
NNCF's data-aware AWQ + scale estimation or GPTQ on calibration text)."""

import contextlib
import logging
import sys

import numpy as np

from ..contract.graph import BEAM_IDX
from ..errors import LuodiError


def _calibration_dataset(nncf, token_ids: tuple, windows: int = 16):
    """NNCF's dataset for the stateful IR: prefills of calibration windows, each from an empty state."""
    from ..quantization.calibration import prefill_windows

    return nncf.Dataset([feed | {BEAM_IDX: np.zeros(1, dtype=np.int32)}
                         for feed in prefill_windows(token_ids)[:windows]])


def compress_weights(model, compression: dict):
    """NNCF weight compression of the model (mode INT8_ASYM, INT4_SYM, ...; group_size for int4), data-free
    (method rtn) or with NNCF's data-aware AWQ + scale estimation or GPTQ on calibration text."""
    try:
        import nncf
    except ImportError:
        raise LuodiError("NNCF is not installed: pip install 'luodi[openvino]'") from None
    _log_to_stderr(logging.getLogger("nncf"))
    mode = getattr(nncf.CompressWeightsMode, compression["mode"], None)
    if mode is None:
        raise LuodiError(f"unknown NNCF compression mode {compression['mode']!r}")
    options = {"group_size": compression["group_size"], "ratio": 1.0} if "group_size" in compression else {}
    method = compression.get("method", "rtn")
    if method != "rtn":
        if not compression.get("calibration"):
            raise LuodiError(f"{method} needs calibration text: --calib FILE")
        if not compression["mode"].startswith("INT4"):
            raise LuodiError(f"NNCF's {method} compresses to int4 only: use --precision int4")
        options |= {"dataset": _calibration_dataset(nncf, compression["calibration"]), method: True,
                    "scale_estimation": method == "awq"}
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars and tables: keep stdout for --json
        return nncf.compress_weights(model, mode=mode, **options)


def _log_to_stderr(logger) -> None:
    """NNCF logs its tables through a handler holding the stdout it saw at import, which redirect_stdout does
    not reach: point it at stderr, so stdout keeps only what luodi prints (--json output stays parseable)."""
    for handler in logger.handlers:
        if type(handler) is logging.StreamHandler and handler.stream is not sys.stderr:
            handler.setStream(sys.stderr)


def compression_record(compression: dict) -> dict:
    """What the manifest records of an NNCF compression (calibration as a token count)."""
    return {k: v for k, v in compression.items() if k not in ("calibration", "passes")} | (
        {"calibration_tokens": len(compression["calibration"])} if compression.get("calibration") else {})

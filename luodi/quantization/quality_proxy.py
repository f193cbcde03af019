"""The quality proxy of the int4 recipe search: perplexity and next-token KL of a quantized graph against the
float graph, both run by ONNX Runtime on the same calibration windows (prefills from an empty cache).

An export's graph computes the logits of a prefill's last position only (passes/last_token_logits.py); the
proxy reads a copy whose LM head takes every position again, so one prefill of a window scores all of its
next-token predictions. Perplexity increase = exp(mean NLL quantized − mean NLL float) − 1 over the same
tokens, the quantity the budget bounds; the KL is recorded beside it.

Memory: the float graph runs once, from its file, and its log-probs wait in an unnamed temporary file beside
it; its session is then freed, so the search holds one float copy of the weights at a time: the trial being
quantized (docs/QUANTIZATION.md).
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..contract.graph import INPUT_IDS, LOGITS
from ..errors import LuodiError
from ..passes.last_token_logits import LAST_ROWS
from ..process_memory import release_freed_memory

MAX_PROTO_BYTES = 2 ** 31 - 1  # a graph held in memory is one protobuf message


def every_position(model):
    """A copy of `model` whose LM head reads every position (the last-token Slice bypassed), if it has one."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph = probe.graph
    sliced = next((n for n in graph.node if n.name == LAST_ROWS), None)
    if sliced is not None:
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == sliced.output[0]:
                    node.input[i] = sliced.input[0]
        graph.node.remove(sliced)
    return probe


def _options():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return options


def _session(model):
    import onnxruntime as ort

    if model.ByteSize() > MAX_PROTO_BYTES:
        raise LuodiError("the int4 recipe search holds the graph in memory, which is over 2 GB here: choose a "
                         "recipe with --method")
    return ort.InferenceSession(model.SerializeToString(), _options(), providers=["CPUExecutionProvider"])


def _file_session(onnx_path: Path):
    """A session of the saved graph with every position's logits, its weights read from the graph's own data
    file by ONNX Runtime (the graph's structure is rewritten into a temporary sibling, removed at once)."""
    import onnx
    import onnxruntime as ort

    from ..fileio import new_temp_file

    structure = every_position(onnx.load(str(onnx_path), load_external_data=False))
    fd, tmp = new_temp_file(onnx_path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(structure.SerializeToString())
        return ort.InferenceSession(str(tmp), _options(), providers=["CPUExecutionProvider"])
    finally:
        tmp.unlink()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Quality:
    """A quantized graph against the float one on the same tokens."""

    perplexity_increase: float
    kl: float  # mean KL(float || quantized) of the next-token distributions


class QualityProxy:
    """Scores graphs against the float graph saved at `onnx_path` on calibration windows (feeds of
    calibration.calibration_feeds); a context manager, whose exit removes the float log-probs' file."""

    def __init__(self, onnx_path: Path, feeds: list[dict]):
        self.feeds = feeds
        self.tokens = sum(f[INPUT_IDS].shape[1] - 1 for f in feeds)
        # beside the graph (its disk, not a RAM-backed /tmp); unnamed, so nothing is left if the run is killed
        self._store = tempfile.TemporaryFile(dir=Path(onnx_path).parent)
        self._windows: list[tuple[int, tuple[int, int]]] = []  # (offset in the file, shape) of each window
        try:
            reference = _file_session(onnx_path)
            for feed in feeds:  # fp32 in the file: every trial compares against the same numbers
                log_probs = self._log_probs(reference, feed).astype(np.float32)
                self._windows.append((self._store.tell(), log_probs.shape))
                self._store.write(log_probs.tobytes())
        except BaseException:
            self._store.close()
            raise
        del reference
        release_freed_memory()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self._store.close()

    def _log_probs(self, session, feed: dict) -> np.ndarray:
        names = {i.name for i in session.get_inputs()}
        logits = session.run([LOGITS], {k: v for k, v in feed.items() if k in names})[0]
        return _log_softmax(logits[0, :-1].astype(np.float64))

    def _reference_log_probs(self, window: int) -> np.ndarray:
        """The float graph's log-probs of one window, read back from the file."""
        offset, shape = self._windows[window]
        self._store.seek(offset)
        count = shape[0] * shape[1]
        return np.frombuffer(self._store.read(count * 4), dtype=np.float32).reshape(shape).astype(np.float64)

    def measure(self, quantized_model) -> Quality:
        """Perplexity increase and mean KL of `quantized_model` (a graph with the float one's interface)."""
        session = _session(every_position(quantized_model))
        nll_float = nll_quantized = kl = 0.0
        for window, feed in enumerate(self.feeds):
            targets = feed[INPUT_IDS][0, 1:]
            base, trial = self._reference_log_probs(window), self._log_probs(session, feed)
            rows = np.arange(len(targets))
            nll_float -= float(base[rows, targets].sum())
            nll_quantized -= float(trial[rows, targets].sum())
            kl += float(np.sum(np.exp(base) * (base - trial)))
        return Quality(float(np.expm1((nll_quantized - nll_float) / self.tokens)), kl / self.tokens)

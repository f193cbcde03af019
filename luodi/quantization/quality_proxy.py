"""The quality proxy of the int4 recipe search: perplexity and next-token KL of a quantized graph against the
float graph, both run by ONNX Runtime on the same calibration windows (prefills from an empty cache).

An export's graph computes the logits of a prefill's last position only (passes/last_token_logits.py); the
proxy reads a copy whose LM head takes every position again, so one prefill of a window scores all of its
next-token predictions. Perplexity increase = exp(mean NLL quantized − mean NLL float) − 1 over the same
tokens, the quantity the budget bounds; the KL is recorded beside it.
"""

from dataclasses import dataclass

import numpy as np

from ..contract.graph import INPUT_IDS, LOGITS
from ..errors import LuodiError
from ..passes.last_token_logits import LAST_ROWS

MAX_PROTO_BYTES = 2 ** 31 - 1  # a graph held in memory is one protobuf message
CACHE_BYTES = 1 << 28  # the float graph's log-probs are kept (fp32) up to this size, else recomputed per trial


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


def _session(model):
    import onnxruntime as ort

    if model.ByteSize() > MAX_PROTO_BYTES:
        raise LuodiError("the int4 recipe search holds the graph in memory, which is over 2 GB here: choose a "
                         "recipe with --method")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Quality:
    """A quantized graph against the float one on the same tokens."""

    perplexity_increase: float
    kl: float  # mean KL(float || quantized) of the next-token distributions


class QualityProxy:
    """Scores graphs against the float graph on calibration windows (feeds of calibration.calibration_feeds)."""

    def __init__(self, float_model, feeds: list[dict]):
        self.feeds = feeds
        self.reference = _session(every_position(float_model))
        self.tokens = sum(f[INPUT_IDS].shape[1] - 1 for f in feeds)
        self.cache: dict[int, np.ndarray] = {}

    def _log_probs(self, session, feed: dict) -> np.ndarray:
        names = {i.name for i in session.get_inputs()}
        logits = session.run([LOGITS], {k: v for k, v in feed.items() if k in names})[0]
        return _log_softmax(logits[0, :-1].astype(np.float64))

    def _reference_log_probs(self, window: int) -> np.ndarray:
        """The float graph's log-probs of one window (fp32 precision either way, so every trial sees the same)."""
        found = self.cache.get(window)
        if found is None:
            found = self._log_probs(self.reference, self.feeds[window]).astype(np.float32)
            if found.nbytes * len(self.feeds) <= CACHE_BYTES:
                self.cache[window] = found
        return found.astype(np.float64)

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

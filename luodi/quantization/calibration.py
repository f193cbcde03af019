"""Calibration data for weight quantization: prefill feeds over calibration text, and the activations that
reach each MatMul (what mixed precision and AWQ measure weights against)."""

import numpy as np

from ..contract.manifest import ModelSpec
from ..errors import LuodiError

ROWS_PER_MATMUL = 256  # activation rows kept per MatMul input: a fixed-seed sample over all positions
WINDOW = 128  # tokens per calibration prefill


def calibration_ids(tokenizer, text: str) -> tuple:
    """Token ids of a calibration text laid out as WINDOW-token prefills, each led by the special tokens the
    tokenizer opens a text with (a BOS: a model such as Gemma 3 is far off its trained behaviour in a window
    without it, which made a quantized graph look as good as the float one there)."""
    from ..evaluate import text_ids, text_windows

    plain, opening = text_ids(tokenizer, text)
    return tuple(token for window in text_windows(plain, WINDOW, None, opening) for token in window)


def prefill_windows(token_ids: tuple) -> list[dict]:
    """input_ids, attention_mask and position_ids ([1, n] int64) of each WINDOW-token slice of the
    calibration ids: one prefill from an empty cache each (no ids, as for methods without calibration: none)."""
    found = []
    for start in range(0, len(token_ids) - 1, WINDOW):
        ids = np.asarray(token_ids[start:start + WINDOW], dtype=np.int64)[None]
        found.append({"input_ids": ids, "attention_mask": np.ones_like(ids),
                      "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None]})
    return found


def sample_rows(parts: list, rows: int, rng) -> np.ndarray:
    """`rows` rows (in order, without replacement) of the concatenated [n, width] parts; all when fewer."""
    x = np.concatenate(parts)
    return x[np.sort(rng.choice(len(x), rows, replace=False))] if len(x) > rows else x


def calibration_feeds(spec: ModelSpec, kv_cache: str, token_ids: tuple) -> list[dict]:
    """Prefill feeds of WINDOW tokens each over the calibration ids, with an empty cache of the graph's layout
    (`spec`: the model's contract.manifest.ModelSpec)."""
    from ..contract.graph import INPUT_IDS, kv_names
    from ..contract.kv import KV_LAYOUTS

    layout, feeds = KV_LAYOUTS[kv_cache], []
    for feed in prefill_windows(token_ids)[:16]:
        slots = layout.slots(feed[INPUT_IDS].shape[1], spec.max_context) if layout.in_place else 0
        empty = np.zeros((1, spec.num_kv_heads, slots, spec.head_dim), np.float32)
        feeds.append(feed | {name: empty for name in kv_names(spec.num_layers)[0]})
    return feeds


def quantizable_matmuls(model) -> dict:
    """{node name: (activation input name, weight initializer)} of the MatMuls with a constant 2-D weight."""
    inits = {i.name: i for i in model.graph.initializer}
    return {n.name: (n.input[0], inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2}


def matmul_activations(model, feeds: list[dict], rows: int = ROWS_PER_MATMUL, seed: int = 0) -> dict:
    """{MatMul node name: [rows, K] float32 activations} from running the (float) model on the feeds with
    ONNX Runtime, each MatMul's input exposed as an extra graph output; rows are sampled without replacement."""
    import onnx
    import onnxruntime as ort

    matmuls = quantizable_matmuls(model)
    wanted = sorted({a for a, _ in matmuls.values()})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in wanted)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del probe
    inputs = {i.name for i in session.get_inputs()}
    seen: dict[str, list] = {name: [] for name in wanted}
    for feed in feeds:
        values = session.run(wanted, {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(wanted, values):
            seen[name].append(value.reshape(-1, value.shape[-1]))
    rng = np.random.default_rng(seed)
    sampled = {name: sample_rows(parts, rows, rng) for name, parts in seen.items()}
    return {node: sampled[a] for node, (a, _) in matmuls.items()}


def short_windows_feed(feeds: list[dict], size: int = 8, rows: int = 16) -> dict:
    """One batched feed of the first `size` tokens of up to `rows` prefill feeds: short enough that the graph
    returns every position's logits (its logits window), each window from an empty cache and opening as its
    prefill does (with the BOS on a model whose tokenizer adds one, calibration_ids), so no window is scored
    in a state the model never sees. A calibration text of fewer than `rows` windows gives fewer rows."""
    windows = [f["input_ids"][:, :size] for f in feeds[:rows] if f["input_ids"].shape[1] >= size]
    if not windows:
        raise LuodiError(f"the calibration text is too short: it gives no window of {size} tokens; give a longer --calib")
    batch = np.concatenate(windows)
    feed = {"input_ids": batch, "attention_mask": np.ones_like(batch),
            "position_ids": np.tile(np.arange(size, dtype=np.int64), (len(batch), 1))}
    for name, value in feeds[0].items():
        if name not in feed:
            _, heads, slots, dim = value.shape
            feed[name] = np.zeros((len(batch), heads, size if slots else 0, dim), value.dtype)
    return feed


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def logit_divergence(model, feed: dict, weights: dict, replace) -> dict:
    """{MatMul node name: mean KL(float logits || logits with only that weight replaced by replace(node))}
    over the feed's positions; `weights` maps node names to their weight initializer names. The weights become
    overridable graph inputs of a probe copy of the model, so one session serves every trial."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    shapes = {i.name: (i.data_type, list(i.dims)) for i in probe.graph.initializer}
    probe.graph.input.extend(onnx.helper.make_tensor_value_info(name, *shapes[name]) for name in weights.values())
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del probe
    inputs = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in feed.items() if k in inputs}
    base = _log_softmax(session.run(["logits"], feed)[0].astype(np.float64))
    divergence = {}
    for node, name in weights.items():
        trial = _log_softmax(session.run(["logits"], feed | {name: replace(node)})[0].astype(np.float64))
        divergence[node] = float(np.mean(np.sum(np.exp(base) * (base - trial), axis=-1)))
    return divergence

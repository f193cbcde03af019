"""Weight-only INT4/INT8 for ONNX Runtime: every 2-D constant MatMul weight -> com.microsoft MatMulNBits, by
onnxruntime's own quantizers: its node quantizers one weight at a time (blockwise RTN, minmax, HQQ;
streamed_weights.py), or its MatMulNBitsQuantizer over the whole model for GPTQ with calibration text.

`accuracy_level` is MatMulNBits' compute type (0: the activations' own fp32; 4: int8 activations, the
fastest CPU kernels): the target config sets it from measurement (docs/QUANTIZATION.md), not by default.
"""

import contextlib
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..contract.quantization import DEFAULT_GROUP_SIZE
from ..errors import LuodiError
from .float_zero_points import lower_float_zero_points
from .half_scales import store_scales_half
from .shared_embedding import share_embedding
from .streamed_weights import load_for_quantization, quantize_matmuls

# awq: scales folded before tracing (awq.py), then RTN; minmax: each block's own [min, max] with a float zero point;
# rtn_sym: symmetric RTN (no zero points); search: the fastest candidate within a quality budget (recipe_search.py)
METHODS = ("search", "rtn", "rtn_sym", "minmax", "hqq", "gptq", "awq")
SEARCH = METHODS[0]


@dataclass(frozen=True)
class WeightQuantization:
    """bits (4 or 8), method, group size (the block along the input dimension), accuracy level, the token
    ids of calibration text (GPTQ only) and the MatMuls to keep at int8."""

    bits: int
    method: str = "rtn"
    group_size: int = DEFAULT_GROUP_SIZE
    accuracy_level: int = 0
    calibration: tuple = ()
    keep: tuple = ()  # MatMul node names (or "lm_head") kept at int8 when the rest goes to int4
    size_budget_mb: float | None = None  # mixed int4/int8 by measured sensitivity, model files within this
    max_quality_loss: float | None = None  # the search's budget: perplexity increase as a fraction (0.03)

    def check(self, hidden_sizes: set[int]) -> None:
        """Clear errors for settings the quantizer cannot honour."""
        if self.method not in METHODS:
            raise LuodiError(f"method {self.method!r} is not available for ONNX Runtime; available: "
                             f"{', '.join(METHODS)}")
        if self.method == SEARCH:
            return self._check_search()
        if self.max_quality_loss is not None:
            raise LuodiError("--max-quality-loss bounds the default int4 recipe search, which --method, --keep and "
                             "--size-budget replace")
        if self.bits not in (4, 8) or (self.method == "hqq" and self.bits != 4):
            allowed = "4" if self.method == "hqq" else "4 or 8"
            raise LuodiError(f"{self.method} quantizes to {allowed} bits, not {self.bits}")
        self._check_group()
        bad = sorted(k for k in hidden_sizes if k % self.group_size)
        if bad:
            raise LuodiError(f"group size {self.group_size} does not divide the input dimension(s) {bad}")
        if self.method in ("gptq", "awq") and not self.calibration:
            raise LuodiError(f"{self.method} needs calibration text: --calib FILE")
        if self.size_budget_mb is not None:
            if self.bits != 4:
                raise LuodiError("a size budget mixes int4 and int8 MatMuls: use it with --precision int4")
            if not self.calibration:
                raise LuodiError("--size-budget measures each MatMul on calibration text: --calib FILE")
            if self.keep:
                raise LuodiError("--keep and --size-budget both choose the int8 MatMuls: give one of them")
            if self.size_budget_mb <= 0:
                raise LuodiError(f"size budget {self.size_budget_mb} MB must be positive")

    def _check_search(self) -> None:
        if self.bits != 4:
            raise LuodiError("the recipe search picks an int4 recipe: use it with --precision int4")
        if self.keep or self.size_budget_mb is not None:
            raise LuodiError("--keep and --size-budget pick int8 MatMuls for a given recipe: give --method too")
        if self.group_size:  # 0: the search picks it
            self._check_group()
        if self.max_quality_loss is not None and not 0 <= self.max_quality_loss < 100:
            raise LuodiError(f"quality budget {self.max_quality_loss} must be a fraction (0.03 for 3%)")

    def _check_group(self) -> None:
        if self.group_size < 16 or self.group_size & (self.group_size - 1):
            raise LuodiError(f"group size {self.group_size} must be a power of two >= 16 (MatMulNBits blocks)")

    @property
    def symmetric(self) -> bool:
        """Symmetric blocks (no zero points stored; MatMulNBits' default zero point, the centre)."""
        return self.method == "rtn_sym"


def _quantizer_module():
    """onnxruntime's matmul_nbits_quantizer, imported without the root-logger setup it does on import."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from onnxruntime.quantization import matmul_nbits_quantizer

    root.setLevel(level)
    root.handlers[:] = handlers
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    return matmul_nbits_quantizer


def _algo_config(q: WeightQuantization, feeds: list[dict]):
    mnq = _quantizer_module()

    if q.method in ("hqq", "minmax"):
        return mnq.HQQWeightOnlyQuantConfig(block_size=q.group_size, bits=q.bits)
    if q.method == "gptq":
        reader = _Reader(feeds)
        return mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, block_size=q.group_size)
    return mnq.DefaultWeightOnlyQuantConfig(block_size=q.group_size, is_symmetric=q.symmetric,
                                            accuracy_level=q.accuracy_level, bits=q.bits)


def _node_quantizer(q: WeightQuantization):
    """onnxruntime's quantizer of one MatMul node for the method (RTN and AWQ's: the default blockwise one)."""
    mnq = _quantizer_module()
    config = _algo_config(q, [])
    if q.method == "minmax":  # on int8 too: SmolLM2's Q4_1 levels are every 17th of 256 (255 = 15·17)
        return _min_max_quantizer(config)
    if q.method == "hqq":
        return mnq.HQQWeightOnlyQuantizer(config)
    return mnq.DefaultWeightOnlyQuantizer(config)


def _import_contrib_ops(model) -> None:
    """Import com.microsoft (MatMulNBits' domain) at version 1, unless the graph imports it already."""
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.add(domain="com.microsoft", version=1)


def _min_max_quantizer(config):
    """onnxruntime's HQQ node quantizer without HQQ's search: each block's scale and float zero point come from
    its own [min, max] (the grid llama.cpp's Q4_1 stores), unrounded."""
    class MinMaxQuantizer(_quantizer_module().HQQWeightOnlyQuantizer):
        def quantize_internal(self, tensor, bits=4, channel_wise=True, group_size=64, optimize=True,
                              round_zero=True, axis=1):
            return super().quantize_internal(tensor, bits, channel_wise, group_size, optimize=False,
                                             round_zero=False, axis=axis)

    return MinMaxQuantizer(config)


class _Reader:
    """The CalibrationDataReader protocol (get_next/rewind, and iteration, which GPTQ uses) over feeds."""

    def __init__(self, feeds: list[dict]):
        self.feeds, self.i = feeds, 0

    def __iter__(self):
        return iter(self.feeds)

    def get_next(self):
        self.i += 1
        return self.feeds[self.i - 1] if self.i <= len(self.feeds) else None

    def rewind(self):
        self.i = 0


def quantize_weights(onnx_path: Path, q: WeightQuantization, feeds: list[dict]) -> dict:
    """Quantize model.onnx (+ .data) in place; returns what the manifest records."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    quantized, report = quantize_model(load_float_model(onnx_path, q), q, feeds, onnx_path.stat().st_size,
                                       folder=onnx_path.parent)
    data = onnx_path.with_name(onnx_path.name + ".data")
    left = [t.name for t in quantized.graph.initializer if uses_external_data(t)]
    if left:  # saved as they are, they would point into the new data file at the old offsets
        raise LuodiError(f"quantization left {len(left)} tensor(s) unread in the float graph's data file "
                         f"(first: {left[0]}); nothing was written")
    onnx_path.unlink()
    data.unlink()
    onnx.save_model(quantized, str(onnx_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    data.chmod(onnx_path.stat().st_mode & 0o777)  # onnx writes the data file private (0600); match the graph's
    mixed = report.get("mixed_precision")
    if mixed:
        files = onnx_path.stat().st_size + data.stat().st_size
        if files > mixed["budget_mb"] * 1e6:
            raise LuodiError(f"the mixed-precision model is {files / 1e6:.2f} MB, over the {mixed['budget_mb']} MB "
                             f"budget (the plan estimated {mixed['planned_mb']} MB); raise the budget slightly")
        mixed["files_mb"] = round(files / 1e6, 4)
    return report


def load_float_model(onnx_path: Path, q: WeightQuantization):
    """The saved float graph for quantize_model: its MatMul weights left in the data file (each read only while
    it is quantized, streamed_weights.py), except for GPTQ and a size budget, which need every weight at once."""
    import onnx

    if q.method == "gptq" or q.size_budget_mb is not None:
        return onnx.load(str(onnx_path))
    return load_for_quantization(onnx_path)


def quantize_model(model, q: WeightQuantization, feeds: list[dict], graph_bytes: int = 0, *, folder: Path):
    """(the quantized model, what the manifest records) of a float model (load_float_model), which it changes;
    `graph_bytes`: the saved graph file's size, weights aside (a size budget's plan counts it); `folder`: where the
    weights it left on disk are."""
    q.check(_matmul_inputs(model))
    # the GPTQ implementation sorts the graph from its inputs and fails on one no node reads (position_ids
    # in GroupQueryAttention graphs): set those aside and give them back afterwards, interface unchanged
    consumed = {name for node in model.graph.node for name in node.input}
    unread = [i for i in model.graph.input if i.name not in consumed]
    for value in unread:
        model.graph.input.remove(value)
    feeds = [{k: v for k, v in feed.items() if k in consumed} for feed in feeds]
    kept = _kept_nodes(model, q.keep) if q.bits == 4 else []
    mixed = _mixed_plan(model, q, feeds, graph_bytes) if q.size_budget_mb is not None else None
    if mixed:
        kept = mixed["int8"]
    if q.method == "gptq":  # onnxruntime's GPTQ runs the whole model: its own process() over it
        quantizer = _quantizer_module().MatMulNBitsQuantizer(
            model, bits=q.bits, block_size=q.group_size, accuracy_level=q.accuracy_level, nodes_to_exclude=kept,
            algo_config=_algo_config(q, feeds))
        with contextlib.redirect_stdout(sys.stderr):  # GPTQ prints its progress bar
            quantizer.process()
        model = quantizer.model.model
    main = None if q.method == "gptq" else _node_quantizer(q)
    int8 = _node_quantizer(WeightQuantization(bits=8, group_size=q.group_size, accuracy_level=q.accuracy_level))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # HQQ's torch view
        quantize_matmuls(model, folder, lambda node: int8 if node.name in kept else main)
    _import_contrib_ops(model)
    model.graph.input.extend(unread)
    ops = [n.op_type for n in model.graph.node]  # before the lowering adds its small fp32 MatMuls
    offsets = lower_float_zero_points(model)
    _set_accuracy_level(model.graph, q.accuracy_level)
    shared = share_embedding(model, offsets)
    halved = store_scales_half(model, offsets)
    _drop_unused_initializers(model.graph)
    report = {"bits": q.bits, "method": q.method, "group_size": q.group_size, "accuracy_level": q.accuracy_level,
              "matmuls_quantized": ops.count("MatMulNBits"), "matmuls_kept": ops.count("MatMul"),
              "calibration_tokens": len(q.calibration), "kept_int8": kept, "shared_embedding": shared,
              "float_zero_points_lowered": len(offsets), "fp16_scales_saved_mb": round(halved / 1e6, 2)}
    if mixed:
        report["mixed_precision"] = mixed
    return model, report


def _mixed_plan(model, q: WeightQuantization, feeds: list[dict], graph_bytes: int) -> dict:
    """The INT8 MatMuls of a mixed export: sensitivities on calibration text, then the size budget
    (`graph_bytes`: the size of the graph file, weights aside)."""
    from onnx import numpy_helper

    from . import mixed_precision
    from .calibration import logit_divergence, matmul_activations, quantizable_matmuls, short_windows_feed
    from .rtn import fake_quantize, fake_quantize_minmax

    grid = fake_quantize_minmax if q.method == "minmax" else fake_quantize
    matmuls = quantizable_matmuls(model)
    weights = {name: numpy_helper.to_array(init) for name, (_, init) in matmuls.items()}
    sensitivities = mixed_precision.measure(weights, matmul_activations(model, feeds), q.group_size, grid)
    divergence = logit_divergence(model, short_windows_feed(feeds), {n: init.name for n, (_, init) in matmuls.items()},
                                  lambda node: grid(weights[node], 4, q.group_size))
    for s in sensitivities:
        s.divergence_int4 = divergence[s.name]
    quantized = {init.name for _, init in matmuls.values()}
    sizes = {i.name: numpy_helper.to_array(i).nbytes for i in model.graph.initializer}
    other = sum(b for name, b in sizes.items() if name not in quantized)
    other += graph_bytes + 256 * len(matmuls)  # the graph file, plus each MatMulNBits' added attributes and names
    shared = {node: sizes[f"{init.name}.int8"] + sizes.get(f"{init.name}.scales", 0)  # tied table, shared
              for node, (_, init) in matmuls.items() if f"{init.name}.int8" in sizes}
    if q.method == "minmax":  # the lowering's fp32 ones-per-block constants: one per input size, and the lookup's
        constant_inputs = list({w.shape[0] for w in weights.values()}) + [weights[node].shape[0] for node in shared]
        other += sum(k * (k // q.group_size) * 4 for k in constant_inputs)
    return mixed_precision.plan(sensitivities, other, int(q.size_budget_mb * 1e6), q.group_size, shared,
                                offsets4=q.method == "minmax")


def _kept_nodes(model, keep: tuple) -> list[str]:
    """Node names of the MatMuls to keep at int8 ("lm_head": the one making the logits), or a clear error."""
    import onnx_ir as ir

    from ..passes.base import logits_head

    matmuls = {n.name: n for n in model.graph.node if n.op_type == "MatMul"}
    names = []
    for item in keep:
        if item == "lm_head":  # the MatMul making the logits, behind a final soft-capping (Gemma 2) if any
            head, _ = logits_head(ir.from_proto(model.graph))
            if head is None or head.name not in matmuls:
                raise LuodiError("--keep lm_head: this graph's logits do not come from a MatMul")
            names.append(head.name)
        elif item in matmuls:
            names.append(item)
        else:
            raise LuodiError(f"--keep {item!r}: no MatMul of that name (use 'lm_head' or a name luodi inspect shows)")
    return names


def _matmul_inputs(model) -> set[int]:
    """Input dimensions (K) of the constant 2-D MatMul weights."""
    inits = {i.name: i for i in model.graph.initializer}
    return {int(inits[n.input[1]].dims[0]) for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2}


def _set_accuracy_level(graph, level: int) -> None:
    """HQQ's node quantizer (and so minmax) leaves accuracy_level unset (0, fp32 compute): give every
    MatMulNBits the configured level."""
    from onnx import helper

    for node in graph.node:
        if node.op_type == "MatMulNBits" and all(a.name != "accuracy_level" for a in node.attribute):
            node.attribute.append(helper.make_attribute("accuracy_level", level))


def _drop_unused_initializers(graph) -> None:
    """Float weights the quantized nodes replaced (a tied table's float copy once both its readers are
    quantized) would otherwise stay in the file."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for i in reversed(range(len(graph.initializer))):  # in place: re-adding the kept ones would copy them
        if graph.initializer[i].name not in used:
            del graph.initializer[i]

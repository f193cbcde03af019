"""OpenVINO backend: a stateful IR whose KV cache lives inside the infer request.

Each generation runs on an infer request whose state starts empty (reset_state()); a step feeds the new
tokens, the mask over past + new positions, their positions and beam_idx (row i continues cached row i),
and copies out only the last position's logits. A stateless IR (past/present as tensors) is run with the
cache passed in and out, for users who need it.
"""

import threading
import weakref
from pathlib import Path

import numpy as np

from ..contract.graph import ATTENTION_MASK, BEAM_IDX, INPUT_IDS, LOGITS, POSITION_IDS, is_past_name, kv_names
from ..contract.kv import CONCAT, STATEFUL
from ..contract.manifest import ModelSpec, RuntimeFacts
from ..errors import CorruptModelError, LuodiError
from ..runtime_libraries import compile_options, import_openvino
from .base import Backend, KVState

INFERENCE_PRECISIONS = ("f32", "bf16", "f16")
CPU_CAPABILITY = {"bf16": "BF16", "f16": "FP16"}  # OPTIMIZATION_CAPABILITIES names


def check_precision(core, device: str, precision: str) -> None:
    """Refuse an unknown inference precision, and one the CPU cannot compute in (bf16 needs AVX512-BF16 or AMX,
    f16 AVX512-FP16), before anything is compiled."""
    if precision not in INFERENCE_PRECISIONS:
        raise LuodiError(f"unknown inference precision {precision!r}; choose one of {', '.join(INFERENCE_PRECISIONS)}")
    if precision == "f32" or not device.startswith("CPU"):
        return
    capabilities = set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if CPU_CAPABILITY[precision] not in capabilities:
        raise LuodiError(f"this CPU cannot compute in {precision} (its OpenVINO capabilities: "
                         f"{', '.join(sorted(capabilities))}); use f32")


class OpenVinoBackend(Backend):
    """Runs an exported OpenVINO IR (stateful or stateless) on an OpenVINO device (CPU by default), computing in
    `precision` (f32 unless asked; `fp32`: the export's weights are fp32, so an f32 run keeps an f32 KV cache;
    `exact`: the parity check's settings, see compile_options)."""

    name = "openvino"

    def __init__(self, model_path: Path, spec: ModelSpec, device: str = "CPU", threads: int | None = None,
                 hint: str = "LATENCY", fp32: bool = True, precision: str = "f32", exact: bool = False,
                 facts: RuntimeFacts | None = None):
        self.take_facts(facts)
        ov = import_openvino()
        self.spec, self.max_context, self.vocab_size = spec, spec.max_context, spec.vocab_size
        self.inference_precision = precision
        core = ov.Core()
        if device.split(":")[0].split(".")[0] not in {d.split(".")[0] for d in core.available_devices} | {
                "AUTO", "HETERO", "MULTI"}:
            raise LuodiError(f"OpenVINO has no device {device!r}; available: {', '.join(core.available_devices)}")
        check_precision(core, device, precision)
        weights = Path(model_path).with_suffix(".bin")
        if Path(model_path).suffix == ".xml" and not weights.is_file():
            raise CorruptModelError(f"{model_path}: its weights file {weights.name} is missing")
        try:
            model = core.read_model(str(model_path))
            # an fp32 export computed in f32 keeps its KV cache in f32; bf16/f16 take the plugin's cache precision
            options = compile_options(threads, hint, precision, kv_f32=fp32 and precision == "f32", exact=exact)
            self.kv_dtype = "float32" if (fp32 and precision == "f32") or exact else None  # else the plugin's choice
            self.compiled = core.compile_model(model, device, options)
        except Exception as e:  # OpenVINO raises RuntimeError with multi-line messages
            raise CorruptModelError(f"{model_path}: OpenVINO cannot load the model "
                                    f"({str(e).strip().splitlines()[0][:300]})") from None
        inputs = {name for port in self.compiled.inputs for name in port.get_names()}
        self.stateful = not any(is_past_name(name) for name in inputs)
        self.kv_layout = STATEFUL if self.stateful else CONCAT
        self.has_beam_idx = BEAM_IDX in inputs
        self.past_names, self.present_names = kv_names(spec.num_layers)
        self._kv_shape = (spec.num_kv_heads, 0, spec.head_dim)
        self._last = None  # (infer request, weak reference to the state using it)
        self._lock = threading.Lock()  # generations on several threads never share a request

    def new_state(self, batch: int, capacity: int | None = None) -> KVState:
        """A generation's state: an infer request with its KV variables reset. The previous generation's request
        is reused once nothing refers to its state any more (a new request's first inference allocates its
        memory, ~0.3 s for a 512-token prompt); a generation still in progress keeps its own."""
        state = super().new_state(batch, capacity)
        with self._lock:
            request, owner = self._last if self._last else (None, None)
            if request is None or owner() is not None:
                request = self.compiled.create_infer_request()
            self._last = (request, weakref.ref(state))
        request.reset_state()
        state.cache = {"request": request, "kv": None}
        return state

    def forward_window(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        feeds = {INPUT_IDS: np.ascontiguousarray(input_ids, dtype=np.int64),
                 ATTENTION_MASK: np.ascontiguousarray(attention_mask, dtype=np.int64),
                 POSITION_IDS: np.ascontiguousarray(position_ids, dtype=np.int64)}
        if self.has_beam_idx:  # row i continues cached row i, unless gather_rows asked for others
            gather = state.cache.pop(BEAM_IDX, None)
            feeds[BEAM_IDX] = np.arange(state.batch, dtype=np.int32) if gather is None else gather
        if not self.stateful:
            kv = state.cache["kv"] or [np.zeros((state.batch, *self._kv_shape), np.float32)] * len(self.past_names)
            feeds |= dict(zip(self.past_names, kv))
        request = state.cache["request"]
        try:
            request.infer(feeds)  # inputs are copied: the request must not keep pointers into freed arrays
        except Exception as e:
            raise LuodiError(f"OpenVINO failed to run the model: {str(e).strip().splitlines()[0][:300]}") from None
        if not self.stateful:
            state.cache["kv"] = [request.get_tensor(name).data.copy() for name in self.present_names]
        state.past_length += input_ids.shape[1]
        return np.array(request.get_tensor(LOGITS).data, dtype=np.float32)

    def gather_rows(self, state: KVState, index: np.ndarray) -> None:
        """Row i continues cached row index[i]: the next step's beam_idx (the IR's Gather on every KV variable)."""
        if not (self.stateful and self.has_beam_idx):
            return super().gather_rows(state, index)
        previous = state.cache.get(BEAM_IDX)
        index = np.asarray(index, dtype=np.int32)
        state.cache[BEAM_IDX] = index if previous is None else previous[index]
        state.batch = len(index)

    def kv_arrays(self, state: KVState) -> dict[str, np.ndarray]:
        """Every KV variable's state (or the stateless cache) as arrays, any pending gather applied."""
        if not self.stateful:
            return dict(zip(self.past_names, state.cache["kv"]))
        gather = state.cache.get(BEAM_IDX)
        arrays = {v.name: v.state.data for v in state.cache["request"].query_state()}
        return {name: a[gather] if gather is not None else a.copy() for name, a in arrays.items()}

    def set_kv_arrays(self, state: KVState, arrays: dict[str, np.ndarray]) -> None:
        """The arrays as the KV variables' states (or the stateless cache); the batch and past length follow."""
        state.batch, _, state.past_length, _ = next(iter(arrays.values())).shape
        state.cache.pop(BEAM_IDX, None)
        if not self.stateful:
            state.cache["kv"] = [arrays[name] for name in self.past_names]
            return
        import openvino as ov

        for variable in state.cache["request"].query_state():
            variable.state = ov.Tensor(np.ascontiguousarray(arrays[variable.name]))

    def _truncate(self, state: KVState, past_length: int) -> None:
        """Cut every KV variable (or the stateless cache) to its first past_length positions."""
        if not self.stateful:
            state.cache["kv"] = [kv[:, :, :past_length] for kv in state.cache["kv"]]
            return
        import openvino as ov

        for variable in state.cache["request"].query_state():
            variable.state = ov.Tensor(np.ascontiguousarray(variable.state.data[:, :, :past_length]))

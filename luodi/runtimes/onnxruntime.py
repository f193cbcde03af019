"""ONNX Runtime (CPU) backend over IO binding, for every KV-cache layout an ort or trt export can have.

The backend owns the session, a step's inputs (token ids, or their rows read from the data file for a graph
that takes inputs_embeds), the logits it binds as an output and the run; its KV-cache strategy
(runtimes/ort_cache.py: concatenated presents, the shared in-place buffer or the scatter buffer), chosen once
from the manifest's kv_cache, owns the cache between steps and how each step binds it.
"""

import os
from pathlib import Path

import numpy as np

from ..contract.graph import ATTENTION_MASK, INPUT_IDS, INPUTS_EMBEDS, LOGITS, POSITION_IDS, is_past_name
from ..contract.kv import KVLayout
from ..contract.manifest import EmbeddingTableRef, ModelSpec, RuntimeFacts
from ..errors import CorruptModelError, LuodiError
from .base import Backend, KVState
from .embedding_table import EmbeddingTable
from .ort_cache import KVGeometry, strategy_for

# --providers names -> ONNX Runtime execution providers (the GPU ones come with onnxruntime-gpu or a provider
# package); CPU is always appended as the fallback for nodes a provider does not take
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
             "nvtensorrtrtx": "NvTensorRTRTXExecutionProvider"}


def execution_providers(ort, names: list[str] | None) -> list[str]:
    """ONNX Runtime provider names for --providers entries, or a clear error naming what is installed."""
    wanted = [n.strip().lower() for n in names or ["cpu"] if n.strip()]
    unknown = [n for n in wanted if n not in PROVIDERS]
    if unknown:
        raise LuodiError(f"unknown provider(s) {', '.join(unknown)}; known: {', '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    missing = [n for n in wanted if PROVIDERS[n] not in available]
    if missing:
        raise LuodiError(f"provider(s) {', '.join(missing)} not available in this onnxruntime (it has: "
                         f"{', '.join(available)}); install onnxruntime-gpu or the provider's package")
    return list(dict.fromkeys([PROVIDERS[n] for n in wanted] + ["CPUExecutionProvider"]))


def _session_options(ort, threads: int | None, spin_between_runs: bool = True):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not spin_between_runs:  # threads spin while a run lasts, and stop when it returns
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    return opts


def _dtype(onnx_type: str) -> type:
    """The numpy dtype of a session input or output: fp16 graphs (the trt target's) or fp32."""
    return np.float16 if onnx_type == "tensor(float16)" else np.float32


class OrtBackend(Backend):
    """Runs an exported model.onnx on ONNX Runtime (CPU, or the execution providers asked for)."""

    name = "ort"

    def __init__(self, model_path: Path, spec: ModelSpec, kv_cache: str, threads: int | None = None,
                 providers: list[str] | None = None, embedding_table: EmbeddingTableRef | None = None,
                 facts: RuntimeFacts | None = None):
        self.take_facts(facts)
        try:
            import onnxruntime as ort
        except ImportError:
            raise LuodiError("onnxruntime is not installed: pip install 'luodi[runtime-ort]'") from None
        strategy = strategy_for(kv_cache)
        self._ort = ort
        self._session_args = (str(model_path), threads, execution_providers(ort, providers))
        self.spec = spec
        self.max_context = spec.max_context
        self.vocab_size = spec.vocab_size
        self.spin_between_runs = True
        self.session = self._open_session()
        inputs = self.session.get_inputs()
        # a graph whose embedding lookup was left to the runtime (embedding_input) takes the rows, read from the file
        self._embeddings = EmbeddingTable.for_graph({i.name for i in inputs}, Path(model_path).parent,
                                                    embedding_table)
        past_type = next(i.type for i in inputs if is_past_name(i.name))
        geometry = KVGeometry(spec.num_layers, spec.num_kv_heads, spec.head_dim, _dtype(past_type))
        self.kv = strategy(self, geometry, self.max_context)
        logits = next(o for o in self.session.get_outputs() if o.name == LOGITS)
        self._logits_dtype = _dtype(logits.type)
        self._logits_width = logits.shape[-1] if isinstance(logits.shape[-1], int) else self.vocab_size

    @property
    def kv_cache(self) -> str:
        """The manifest's name of the graph's KV-cache layout."""
        return self.kv.layout.name

    @property
    def kv_dtype(self) -> str:
        """The KV cache's element type (numpy's name)."""
        return np.dtype(self.kv.geometry.dtype).name

    def _open_session(self):
        path, threads, providers = self._session_args
        try:
            return self._ort.InferenceSession(path, _session_options(self._ort, threads, self.spin_between_runs),
                                              providers=providers)
        except Exception as e:  # ORT raises its own exception types for bad or truncated files
            raise CorruptModelError(f"{path}: ONNX Runtime cannot load the model "
                                    f"({str(e).splitlines()[0][:300]})") from None

    def share_cpu(self) -> None:
        """Stop the session's threads from busy-waiting once a run returns (re-opening it once); they still spin
        between the ops of a run. With a draft model's session running between this one's steps, spinning
        threads of the idle session take the cores the running one needs (measured on SmolLM2, 2 cores: INT4
        self-drafting 0.7x plain with spinning). Stopping at the end of each run rather than never spinning:
        a cycle of four INT4 draft steps and a 5-position fp32 verification took 77.1 vs 82.7 ms (medians of
        three alternating runs). A lone session keeps spinning between runs, which is faster for short steps
        (INT4 decode 16%)."""
        if self.spin_between_runs:
            self.spin_between_runs = False
            self.session = self._open_session()

    def new_state(self, batch: int, capacity: int | None = None) -> KVState:
        """An empty state whose cache the strategy makes (buffers, or empty pasts)."""
        state = super().new_state(batch, capacity)
        state.cache = self.kv.new_cache(batch, state.capacity)
        return state

    def shares_cache_with(self, owner: Backend) -> bool:
        """Another ORT export whose cache this one's strategy can step over (the same in-place KV buffers)."""
        return isinstance(owner, OrtBackend) and self.kv.shares_with(owner.kv)

    def view_state(self, state: KVState) -> KVState:
        """The same KV buffers, bound to this session on its first step."""
        return KVState(state.batch, state.capacity, state.past_length, self.kv.view(state.cache))

    def forward_window(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        """One step through the cache strategy; the state then covers the step's positions too."""
        input_ids, attention_mask, position_ids = (np.ascontiguousarray(a, dtype=np.int64)
                                                   for a in (input_ids, attention_mask, position_ids))
        logits = self.kv.step(state, input_ids, attention_mask, position_ids)
        state.past_length += input_ids.shape[1]
        return logits

    def _truncate(self, state: KVState, past_length: int) -> None:
        self.kv.truncate(state, past_length)

    @property
    def kv_layout(self) -> KVLayout:
        """The layout of the graph's cache (its strategy's)."""
        return self.kv.layout

    def kv_arrays(self, state: KVState) -> dict[str, np.ndarray]:
        """The cache as arrays, from the strategy (concat and scatter_buffer: rows padded as mask columns)."""
        return self.kv.arrays(state)

    def set_kv_arrays(self, state: KVState, arrays: dict[str, np.ndarray]) -> None:
        """The arrays as the state's cache; its batch and past length follow them."""
        self.kv.set_arrays(state, arrays)
        state.batch, _, state.past_length, _ = next(iter(arrays.values())).shape

    def io_binding(self):
        """A fresh IO binding of the current session (share_cpu may re-open it)."""
        return self.session.io_binding()

    def ort_value(self, array: np.ndarray):
        """An OrtValue over the array's memory (no copy), to bind as a KV input or output."""
        return self._ort.OrtValue.ortvalue_from_numpy(array)

    def run_bound(self, binding, input_ids, attention_mask, position_ids) -> np.ndarray:
        """Run a step whose KV tensors `binding` holds. The logits are written into a fresh array bound as the
        output: reading them back with get_outputs() wraps every present as well, 0.2 ms of a 6 ms INT4 step."""
        self._bind_inputs(binding, input_ids, attention_mask, position_ids)
        batch, seq = input_ids.shape
        logits = np.empty((batch, self.kept_rows(seq), self._logits_width), self._logits_dtype)
        binding.bind_output(LOGITS, "cpu", element_type=logits.dtype, shape=logits.shape,
                            buffer_ptr=logits.ctypes.data)
        try:
            self.session.run_with_iobinding(binding)
        except Exception as e:  # ORT raises its own types; turn them into one clear line
            raise LuodiError(f"ONNX Runtime failed to run the model: {str(e).splitlines()[0][:300]}") from None
        return logits.astype(np.float32, copy=False)

    def _bind_inputs(self, binding, input_ids, attention_mask, position_ids) -> None:
        if self._embeddings is None:
            binding.bind_cpu_input(INPUT_IDS, input_ids)
        else:
            binding.bind_cpu_input(INPUTS_EMBEDS, self._embeddings(input_ids))
        binding.bind_cpu_input(ATTENTION_MASK, attention_mask)
        binding.bind_cpu_input(POSITION_IDS, position_ids)

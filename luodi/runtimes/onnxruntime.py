"""ONNX Runtime (CPU) backend over IO binding, for both KV-cache layouts an export can have.

- concat: each step's presents (past + new) are bound as the next step's pasts; no numpy copy of the cache.
- shared_buffer (the inplace_kv_cache pass): one [batch, kv_heads, capacity, head_dim] buffer per layer
  and key/value is bound as both past and present, so a step writes its new positions in place. Each
  sequence's cache starts at slot 0 with no padding, so a multi-token step over a padded batch (or over
  a batch with a past, which GroupQueryAttention does not take) runs one sequence at a time, each on its
  own rows of the buffers.
- scatter_buffer (the kv_cache_scatter pass, standard ops): one [batch, kv_heads, max_context, head_dim]
  buffer per layer and key/value, bound as both past and present; TensorScatter writes a step's positions
  at slot (mask width - new positions) for every row, so padded batches run whole.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..contract.graph import INPUT_IDS, INPUTS_EMBEDS
from ..errors import CorruptModelError, LuodiError
from .base import Backend, KVState, kv_names
from .embedding_table import EmbeddingTable

KV_LAYOUTS = ("concat", "shared_buffer", "scatter_buffer")
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


@dataclass
class _SharedBuffers:
    """A generation's KV buffers (one per layer and key/value) and the IO binding that holds them."""

    buffers: list
    binding: object = None


class OrtBackend(Backend):
    """Runs an exported model.onnx on ONNX Runtime's CPU execution provider."""

    name = "ort"

    def __init__(self, model_path: Path, spec: dict, kv_cache: str, threads: int | None = None,
                 providers: list[str] | None = None, embedding_table: dict | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise LuodiError("onnxruntime is not installed: pip install 'luodi[runtime-ort]'") from None
        if kv_cache not in KV_LAYOUTS:
            raise CorruptModelError(f"unknown KV cache layout {kv_cache!r} (known: {', '.join(KV_LAYOUTS)})")
        self._ort = ort
        self._session_args = (str(model_path), threads, execution_providers(ort, providers))
        self.spec, self.kv_cache = spec, kv_cache
        self.max_context = spec["max_context"]
        self.vocab_size = spec["vocab_size"]
        self.spin_between_runs = True
        self.session = self._open_session()
        self.past_names, self.present_names = kv_names(spec["num_layers"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        # a graph whose embedding lookup was left to the runtime (embedding_input) takes the rows, read from the file
        self._embeddings = EmbeddingTable.for_graph({i.name for i in self.session.get_inputs()},
                                                    Path(model_path).parent, embedding_table)
        self._kv_shape = (spec["num_kv_heads"], 0, spec["head_dim"])
        past_type = next(i.type for i in self.session.get_inputs() if i.name == self.past_names[0])
        self._kv_dtype = np.float16 if past_type == "tensor(float16)" else np.float32  # fp16 graphs (trt target)
        logits = self.session.get_outputs()[0]
        self._logits_dtype = np.float16 if logits.type == "tensor(float16)" else np.float32
        self._logits_width = logits.shape[-1] if isinstance(logits.shape[-1], int) else self.vocab_size

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
        state = super().new_state(batch, capacity)
        if self.kv_cache != "concat":  # zero pages are only backed by memory once written
            heads, _, dim = self._kv_shape
            slots = self.max_context if self.kv_cache == "scatter_buffer" else state.capacity
            state.cache = _SharedBuffers([np.zeros((batch, heads, slots, dim), dtype=self._kv_dtype)
                                          for _ in self.past_names])
        return state

    def shares_cache_with(self, owner: Backend) -> bool:
        """Another ORT export with the same in-place KV buffers (layers, heads, head size, dtype)."""
        return (isinstance(owner, OrtBackend) and self.kv_cache == owner.kv_cache == "shared_buffer"
                and self.past_names == owner.past_names and self._kv_shape == owner._kv_shape
                and self._kv_dtype == owner._kv_dtype)

    def view_state(self, state: KVState) -> KVState:
        """The same KV buffers, bound to this session on its first step."""
        return KVState(state.batch, state.capacity, state.past_length, _SharedBuffers(state.cache.buffers))

    def forward_window(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        input_ids, attention_mask, position_ids = (np.ascontiguousarray(a, dtype=np.int64)
                                                   for a in (input_ids, attention_mask, position_ids))
        if self.kv_cache != "concat":
            return self._forward_shared(state, input_ids, attention_mask, position_ids)
        return self._forward_concat(state, input_ids, attention_mask, position_ids)

    def _forward_concat(self, state, input_ids, attention_mask, position_ids) -> np.ndarray:
        binding = self._bind_inputs(input_ids, attention_mask, position_ids)
        if state.cache is None:
            empty = np.zeros((state.batch, *self._kv_shape), dtype=self._kv_dtype)
            for name in self.past_names:
                binding.bind_cpu_input(name, empty)
        else:
            for name, value in zip(self.past_names, state.cache):
                binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self._run(binding)
        outputs = binding.get_outputs()
        state.cache = outputs[1:]
        state.past_length += input_ids.shape[1]
        return outputs[0].numpy().astype(np.float32, copy=False)

    def _truncate(self, state: KVState, past_length: int) -> None:
        """Shared and scatter buffers are addressed by the next step's mask width; concat caches are cut."""
        if self.kv_cache == "concat":
            state.cache = [self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[:, :, :past_length]))
                           for v in state.cache]

    def _forward_shared(self, state, input_ids, attention_mask, position_ids) -> np.ndarray:
        batch, seq = input_ids.shape
        if attention_mask.shape[1] > state.capacity:
            raise LuodiError(f"the KV cache holds {state.capacity} positions; this step needs "
                             f"{attention_mask.shape[1]}")
        one_by_one = self.kv_cache == "shared_buffer" and seq > 1 and batch > 1 and (
            state.past_length > 0 or not attention_mask.all())
        if one_by_one:
            kept = self.kept_rows(seq)
            logits = np.stack([_front_pad(self._run_row(state, row, input_ids, attention_mask), kept)
                               for row in range(batch)])
        else:
            if state.cache.binding is None:  # the buffers stay bound from step to step; only the inputs change
                state.cache.binding = self._bind_buffers(self.session.io_binding(), state.cache.buffers)
            logits = self._run_shared(state.cache.binding, input_ids, attention_mask, position_ids)
        state.past_length += seq
        return logits

    def _run_row(self, state, row: int, input_ids, attention_mask) -> np.ndarray:
        """One sequence of a multi-token step, its padding dropped, on its own rows of the buffers; the logits of
        its last positions [n, vocab]."""
        seq = input_ids.shape[1]
        new = attention_mask[row, -seq:] > 0
        if not new.any():
            raise LuodiError(f"sequence {row} has no tokens in this step")
        past = int(attention_mask[row, :-seq].sum())
        ids = input_ids[row, new][None]
        mask = np.ones((1, past + ids.shape[1]), dtype=np.int64)
        positions = np.arange(past, past + ids.shape[1], dtype=np.int64)[None]
        binding = self._bind_buffers(self.session.io_binding(), [b[row:row + 1] for b in state.cache.buffers])
        return self._run_shared(binding, ids, mask, positions)[0]

    def _bind_buffers(self, binding, buffers: list[np.ndarray]):
        """Bind each KV buffer as its layer's past and present (each step binds its own logits array)."""
        for past, present, buffer in zip(self.past_names, self.present_names, buffers):
            value = self._ort.OrtValue.ortvalue_from_numpy(buffer)
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        return binding

    def _run_shared(self, binding, input_ids, attention_mask, position_ids) -> np.ndarray:
        """Run a step on bound KV buffers. The logits are written into a fresh array bound as the output:
        reading them back with get_outputs() wraps every present as well, 0.2 ms of a 6 ms INT4 step."""
        self._bind_inputs(input_ids, attention_mask, position_ids, binding)
        batch, seq = input_ids.shape
        logits = np.empty((batch, self.kept_rows(seq), self._logits_width), self._logits_dtype)
        binding.bind_output(self.output_names[0], "cpu", element_type=logits.dtype, shape=logits.shape,
                            buffer_ptr=logits.ctypes.data)
        self._run(binding)
        return logits.astype(np.float32, copy=False)

    def _bind_inputs(self, input_ids, attention_mask, position_ids, binding=None):
        binding = binding or self.session.io_binding()
        if self._embeddings is None:
            binding.bind_cpu_input(INPUT_IDS, input_ids)
        else:
            binding.bind_cpu_input(INPUTS_EMBEDS, self._embeddings(input_ids))
        binding.bind_cpu_input("attention_mask", attention_mask)
        binding.bind_cpu_input("position_ids", position_ids)
        return binding

    def _run(self, binding) -> None:
        try:
            self.session.run_with_iobinding(binding)
        except Exception as e:  # ORT raises its own types; turn them into one clear line
            raise LuodiError(f"ONNX Runtime failed to run the model: {str(e).splitlines()[0][:300]}") from None


def _front_pad(logits: np.ndarray, rows: int) -> np.ndarray:
    """A sequence's logits [n, vocab] as `rows` rows: its last ones, after zero rows for the step's left padding
    (which has none; a sequence with fewer tokens than the padded step may return more rows than it keeps)."""
    logits = logits[-rows:]
    missing = rows - logits.shape[0]
    return np.concatenate([np.zeros((missing, logits.shape[1]), logits.dtype), logits]) if missing > 0 else logits

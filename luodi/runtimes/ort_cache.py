"""The ONNX Runtime backend's KV caches: one strategy per KV layout an exported graph can have.

OrtBackend (runtimes/onnxruntime.py) owns the session, a step's token, mask and position inputs and its logits;
it picks its cache strategy once, `strategy_for(manifest kv_cache)`, a lookup in STRATEGIES keyed by the
contract's KVLayout (contract/kv.py), and leaves every cache-specific decision to it:

- ConcatCache (concat): each step's presents (past + new positions) are the next step's pasts, kept as
  OrtValues (no numpy copy); a rollback cuts them.
- SharedBufferCache (shared_buffer, the inplace_kv_cache pass): one [batch, kv_heads, capacity, head_dim]
  buffer per layer and key/value, bound as both past and present, so a step writes its new positions in
  place. Each sequence's cache starts at slot 0 with no padding, so a multi-token step over a padded batch
  (or over a batch with a past, which GroupQueryAttention does not take) runs one sequence at a time, each
  on its own rows of the buffers. Another session of the same cache geometry may step over the buffers (a
  draft model on its target's cache: shares_with, view).
- ScatterBufferCache (scatter_buffer, the kv_cache_scatter pass, standard ops): one [batch, kv_heads,
  max_context, head_dim] buffer per layer and key/value, bound as both past and present; TensorScatter
  writes a step's positions at slot (mask width - new positions) for every row, so padded batches run whole.

What a strategy provides (OrtKVCache): `layout`, the KVLayout it runs (its key in STRATEGIES); `new_cache`,
what a new generation's KVState.cache holds (the strategy's own object: arrays, OrtValues, a binding,
per-row lengths or slot maps); `step`, which binds that cache, runs the step through its Runner
(`run_bound` binds the inputs and the logits) and keeps whatever the outputs make the next cache (the
backend counts state.past_length); `truncate`, which forgets positions from a length on (a speculative
rollback) or refuses with a LuodiError; and, for a cache another session may step over, `shares_with` and
`view`. The strategy sees the whole attention mask of each step, so per-row lengths are its own to read.

Adding one: subclass OrtKVCache, set `layout` (a new kind of cache gets its KVLayout in contract/kv.py and
KV_LAYOUTS), implement those methods and list the class in STRATEGIES. A continuous-batching cache keeps per
row its length and slots in its cache object and builds each step's binding from them; a recurrent state
(Mamba) is fixed-size per sequence, so its new_cache ignores the capacity and its truncate restores a
snapshot kept at the positions a rollback may return to (or refuses: then it cannot verify drafts).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..contract.graph import kv_names
from ..contract.kv import CONCAT, KV_LAYOUTS, SCATTER_BUFFER, SHARED_BUFFER, KVLayout
from ..errors import CorruptModelError, LuodiError
from .base import KVState


class Runner(Protocol):
    """What a strategy runs its steps with: the backend's session, inputs and logits (OrtBackend)."""

    def io_binding(self):
        """A fresh IO binding of the current session."""

    def ort_value(self, array: np.ndarray):
        """An OrtValue over the array's memory (no copy)."""

    def run_bound(self, binding, input_ids, attention_mask, position_ids) -> np.ndarray:
        """Bind a step's inputs and a logits array, run; the logits [batch, kept rows, vocab] as float32."""

    def kept_rows(self, seq: int) -> int:
        """How many positions' logits a step of `seq` tokens returns."""


@dataclass(frozen=True)
class KVGeometry:
    """The graph's cache tensors: layers, KV heads, head size and element type (equal geometries can share)."""

    num_layers: int
    kv_heads: int
    head_dim: int
    dtype: type


class OrtKVCache(ABC):
    """A KV-cache strategy: how one layout's cache lives between steps and is bound to each (module docstring)."""

    layout: KVLayout

    def __init__(self, runner: Runner, geometry: KVGeometry, max_context: int):
        self.runner, self.geometry, self.max_context = runner, geometry, max_context
        self.past_names, self.present_names = kv_names(geometry.num_layers)

    def buffer(self, batch: int, slots: int) -> np.ndarray:
        """A zero-filled [batch, kv_heads, slots, head_dim] tensor (its pages are backed by memory once written)."""
        shape = self.layout.buffer_shape(batch, slots, self.geometry.kv_heads, self.geometry.head_dim)
        return np.zeros(shape, dtype=self.geometry.dtype)

    @abstractmethod
    def new_cache(self, batch: int, capacity: int):
        """The cache of a new generation of `batch` sequences of up to `capacity` positions (KVState.cache)."""

    @abstractmethod
    def step(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        """Run one step over `state`'s cache, leaving the new positions in it; the step's logits (Runner.run_bound)."""

    @abstractmethod
    def truncate(self, state: KVState, past_length: int) -> None:
        """Forget the cached positions from `past_length` on (a speculative rollback)."""

    def arrays(self, state: KVState) -> dict[str, np.ndarray]:
        """The cache as [batch, kv_heads, past_length, head_dim] arrays by past name (Backend.kv_arrays), for a
        layout whose slots line up with mask columns."""
        raise LuodiError(f"a {self.layout.name} KV cache is batched by slots (runtimes/slot_pool.py), not as rows")

    def set_arrays(self, state: KVState, arrays: dict[str, np.ndarray]) -> None:
        """Make `arrays` (as arrays() gives them) the state's cache."""
        raise LuodiError(f"a {self.layout.name} KV cache is batched by slots (runtimes/slot_pool.py), not as rows")

    def shares_with(self, other: "OrtKVCache") -> bool:
        """Whether this strategy can step over a cache `other` made (view). None can by default."""
        return False

    def view(self, cache):
        """A cache object over the same memory as `cache`, for this strategy's session (see shares_with)."""
        raise LuodiError(f"a {self.layout.name} KV cache cannot be shared with another model")


class ConcatCache(OrtKVCache):
    """Presents become the next step's pasts: a cache that grows by appending, cut on rollback."""

    layout = CONCAT

    def new_cache(self, batch: int, capacity: int) -> list:
        """Empty pasts (no positions) for every layer and key/value."""
        return [self.runner.ort_value(self.buffer(batch, 0))] * len(self.past_names)

    def step(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        """Bind the pasts and let ONNX Runtime allocate the presents, which the cache keeps."""
        binding = self.runner.io_binding()
        for name, value in zip(self.past_names, state.cache):
            binding.bind_ortvalue_input(name, value)
        for name in self.present_names:  # bound before the logits, so they lead get_outputs()
            binding.bind_output(name, "cpu")
        logits = self.runner.run_bound(binding, input_ids, attention_mask, position_ids)
        state.cache = binding.get_outputs()[:len(self.present_names)]
        return logits

    def arrays(self, state: KVState) -> dict[str, np.ndarray]:
        """The presents as numpy arrays."""
        return {name: value.numpy() for name, value in zip(self.past_names, state.cache)}

    def set_arrays(self, state: KVState, arrays: dict[str, np.ndarray]) -> None:
        """The arrays as the next step's pasts."""
        state.cache = [self.runner.ort_value(np.ascontiguousarray(arrays[name], self.geometry.dtype))
                       for name in self.past_names]

    def truncate(self, state: KVState, past_length: int) -> None:
        """Copy the first `past_length` positions of every present."""
        state.cache = [self.runner.ort_value(np.ascontiguousarray(v.numpy()[:, :, :past_length]))
                       for v in state.cache]


@dataclass
class Buffers:
    """A generation's in-place KV buffers (one per layer and key/value) and the IO binding that holds them."""

    arrays: list
    binding: object = None


class InPlaceCache(OrtKVCache):
    """One buffer per layer and key/value bound as both past and present: a step writes its positions in place."""

    def new_cache(self, batch: int, capacity: int) -> Buffers:
        """Buffers of the layout's slots per sequence (the capacity, or max context for a full-context layout)."""
        slots = self.layout.slots(capacity, self.max_context)
        return Buffers([self.buffer(batch, slots) for _ in self.past_names])

    def step(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        """Check the step fits the generation's capacity, then run it on the buffers."""
        if attention_mask.shape[1] > state.capacity:
            raise LuodiError(f"the KV cache holds {state.capacity} positions; this step needs "
                             f"{attention_mask.shape[1]}")
        return self._run(state, input_ids, attention_mask, position_ids)

    def _run(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        """The whole batch at once; the buffers stay bound from step to step, only the inputs change."""
        cache = state.cache
        if cache.binding is None:
            cache.binding = self.bind(cache.arrays)
        return self.runner.run_bound(cache.binding, input_ids, attention_mask, position_ids)

    def truncate(self, state: KVState, past_length: int) -> None:
        """Nothing to cut: the next step's mask width says which slots hold the past."""

    def bind(self, arrays: list[np.ndarray]):
        """A binding with each buffer as its layer's past and present (each step binds its own logits array)."""
        binding = self.runner.io_binding()
        for past, present, array in zip(self.past_names, self.present_names, arrays):
            value = self.runner.ort_value(array)
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        return binding


class SharedBufferCache(InPlaceCache):
    """GroupQueryAttention's shared buffers: every sequence from slot 0, padded multi-token steps row by row."""

    layout = SHARED_BUFFER

    def _run(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        """A multi-token step over a padded batch or a batch with a past runs one sequence at a time."""
        batch, seq = input_ids.shape
        if seq > 1 and batch > 1 and (state.past_length > 0 or not attention_mask.all()):
            kept = self.runner.kept_rows(seq)
            return np.stack([_front_pad(self._run_row(state.cache, row, input_ids, attention_mask), kept)
                             for row in range(batch)])
        return super()._run(state, input_ids, attention_mask, position_ids)

    def _run_row(self, cache: Buffers, row: int, input_ids, attention_mask) -> np.ndarray:
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
        binding = self.bind([a[row:row + 1] for a in cache.arrays])
        return self.runner.run_bound(binding, ids, mask, positions)[0]

    def shares_with(self, other: OrtKVCache) -> bool:
        """Another session's shared buffers of the same geometry (layers, heads, head size, dtype)."""
        return isinstance(other, SharedBufferCache) and self.geometry == other.geometry

    def view(self, cache: Buffers) -> Buffers:
        """The same buffers, bound to this strategy's session on its first step."""
        return Buffers(cache.arrays)


class ScatterBufferCache(InPlaceCache):
    """TensorScatter's max-context buffers: slots line up with mask columns, so padded batches run whole."""

    layout = SCATTER_BUFFER

    def arrays(self, state: KVState) -> dict[str, np.ndarray]:
        """The buffers' first past_length slots (views)."""
        return {name: array[:, :, :state.past_length] for name, array in zip(self.past_names, state.cache.arrays)}

    def set_arrays(self, state: KVState, arrays: dict[str, np.ndarray]) -> None:
        """New max-context buffers holding the arrays in their first slots (bound on the next step)."""
        buffers = []
        for name in self.past_names:
            array = arrays[name]
            buffer = self.buffer(array.shape[0], self.max_context)
            buffer[:, :, :array.shape[2]] = array
            buffers.append(buffer)
        state.cache = Buffers(buffers)


STRATEGIES = {cls.layout: cls for cls in (ConcatCache, SharedBufferCache, ScatterBufferCache)}


def strategy_for(kv_cache: str) -> type[OrtKVCache]:
    """The strategy class for a manifest's kv_cache name; a one-line error for a layout ONNX Runtime cannot run."""
    strategy = STRATEGIES.get(KV_LAYOUTS.get(kv_cache))
    if strategy is None:
        known = ", ".join(layout.name for layout in STRATEGIES)
        raise CorruptModelError(f"ONNX Runtime cannot run the KV cache layout {kv_cache!r:.60} (it runs: {known})")
    return strategy


def _front_pad(logits: np.ndarray, rows: int) -> np.ndarray:
    """A sequence's logits [n, vocab] as `rows` rows: its last ones, after zero rows for the step's left padding
    (which has none; a sequence with fewer tokens than the padded step may return more rows than it keeps)."""
    logits = logits[-rows:]
    missing = rows - logits.shape[0]
    return np.concatenate([np.zeros((missing, logits.shape[1]), logits.dtype), logits]) if missing > 0 else logits

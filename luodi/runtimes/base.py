"""The backend interface every runtime implements: forward steps over a KV-cache state it owns."""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..contract.kv import KVLayout

from ..contract.manifest import RuntimeFacts
from ..errors import LuodiError


@dataclass
class KVState:
    """One generation's KV cache as the backend holds it, and how many positions it covers."""

    batch: int
    capacity: int  # cache slots per sequence the generation may use (prompt + new tokens)
    past_length: int = 0
    cache: object = None  # backend-specific: OrtValues, a transformers Cache, ...


class Backend(ABC):
    """Runs the model one step at a time; the shared decode loop drives it.

    A step takes the new tokens [batch, seq], the attention mask over past + new positions and the new
    positions' ids, appends their keys/values to the state, and returns the logits of the step's last
    positions [batch, kept_rows(seq), vocab] (float32): every position of a step of up to `logits_window`
    tokens (what a speculative step verifies), the last one only of a longer step (a prefill), as the
    last_token_logits pass makes the graph do; every position when logits_window is None.
    """

    name: str = "base"
    max_context: int
    vocab_size: int
    max_batch: int | None = None  # the most sequences one generation may hold (None: no limit)
    logits_window: int | None = None  # the longest step whose every position's logits are returned (None: any)
    weight_bytes: int | None = None  # what one step reads, the cost a draft model is weighed by (None: unknown)
    source: str | None = None  # sha256 of the checkpoint the export was made from (None: unknown)
    inference_precision: str | None = None  # what the runtime computes in, where chosen at load (OpenVINO)
    kv_layout: KVLayout | None = None  # how its KV cache is held (luodi.contract.kv), what the scheduler's caches
    # (runtimes/sequence_cache.py) go by; None: no layout they can drive

    def take_facts(self, facts: RuntimeFacts | None) -> None:
        """Set what the export's manifest says of the graph (logits window, weight bytes, source), once, from the
        backend's constructor."""
        facts = facts or RuntimeFacts()
        self.logits_window, self.weight_bytes, self.source = facts.logits_window, facts.weight_bytes, facts.source

    def kept_rows(self, seq: int) -> int:
        """How many positions' logits a step of `seq` tokens returns."""
        return seq if self.logits_window is None or seq <= self.logits_window else 1

    def new_state(self, batch: int, capacity: int | None = None) -> KVState:
        """An empty KV cache for `batch` sequences of up to `capacity` positions (default: max context)."""
        return KVState(batch=batch, capacity=min(capacity or self.max_context, self.max_context))

    @abstractmethod
    def forward_window(self, state: KVState, input_ids: np.ndarray, attention_mask: np.ndarray,
                       position_ids: np.ndarray) -> np.ndarray:
        """Run one prefill or decode step; update `state` in place; return the last positions' logits."""

    def forward(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        """Run one step and return the last position's logits [batch, vocab]: what picks the next token."""
        return self.forward_window(state, input_ids, attention_mask, position_ids)[:, -1, :]

    def shares_cache_with(self, owner: "Backend") -> bool:
        """Whether this backend can step over a KV cache state `owner` made (view_state). None can by default."""
        return False

    def view_state(self, state: KVState) -> KVState:
        """A state of this backend over the cache of another backend's `state` (see shares_cache_with): a draft
        model stepping on its target's cache, whose positions it writes the target overwrites when verifying."""
        raise LuodiError(f"the {self.name} backend cannot step over another model's KV cache")

    def share_cpu(self) -> None:
        """Prepare to take turns with another model on the same cores (a draft model's steps run between this
        one's): a backend whose threads busy-wait between runs stops doing so. Nothing to do by default."""

    def kv_arrays(self, state: KVState) -> dict[str, np.ndarray]:
        """The state's cache as arrays [batch, kv_heads, past_length, head_dim] by past name, each row's positions
        in the mask columns they were written at (a rows-padded layout: runtimes/padded_rows.py merges, forks and
        drops rows through these). None can by default."""
        raise LuodiError(f"the {self.name} backend cannot hand out its KV cache, so it cannot batch continuously")

    def set_kv_arrays(self, state: KVState, arrays: dict[str, np.ndarray]) -> None:
        """Make `arrays` (as kv_arrays gives them) the state's cache; the batch and past length follow them."""
        raise LuodiError(f"the {self.name} backend cannot take a KV cache, so it cannot batch continuously")

    def gather_rows(self, state: KVState, index: np.ndarray) -> None:
        """Make row i of the state continue cached row index[i] (OpenVINO's beam_idx): rows dropped, forked or
        reordered. By default through kv_arrays/set_kv_arrays (a copy)."""
        self.set_kv_arrays(state, {name: array[index] for name, array in self.kv_arrays(state).items()})

    def rollback(self, state: KVState, past_length: int) -> None:
        """Forget the cached positions from `past_length` on (rejected speculative drafts), so the next step
        continues after position past_length - 1."""
        if not 0 <= past_length <= state.past_length:
            raise LuodiError(f"cannot roll a KV cache of {state.past_length} positions back to {past_length}")
        if past_length < state.past_length:
            self._truncate(state, past_length)
        state.past_length = past_length

    def _truncate(self, state: KVState, past_length: int) -> None:
        """Drop the cache's positions from past_length on. A fixed buffer that the next step's mask width
        addresses needs nothing; a cache that grows by appending must be cut."""
        raise LuodiError(f"the {self.name} backend cannot roll its KV cache back, so it cannot verify drafts")

"""The backend interface every runtime implements: forward steps over a KV-cache state it owns."""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


def kv_names(num_layers: int) -> tuple[list[str], list[str]]:
    """The graph's KV-cache input names (past_key_values.{i}.key|value) and the matching output names
    (present.{i}.key|value), layer by layer."""
    past = [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    return past, [name.replace("past_key_values", "present", 1) for name in past]


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
    positions' ids, appends their keys/values to the state, and returns the logits of the last new
    position [batch, vocab] (float32).
    """

    name: str = "base"
    max_context: int
    vocab_size: int
    max_batch: int | None = None  # the most sequences one generation may hold (None: no limit)

    def new_state(self, batch: int, capacity: int | None = None) -> KVState:
        """An empty KV cache for `batch` sequences of up to `capacity` positions (default: max context)."""
        return KVState(batch=batch, capacity=min(capacity or self.max_context, self.max_context))

    @abstractmethod
    def forward(self, state: KVState, input_ids: np.ndarray, attention_mask: np.ndarray,
                position_ids: np.ndarray) -> np.ndarray:
        """Run one prefill or decode step; update `state` in place; return last-position logits."""

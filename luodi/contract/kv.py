"""The KV cache's layout: how a graph holds its cache, and what that costs and requires of a runtime.

A layout is made by the pass that rewrites the graph's cache (inplace_kv_cache, kv_cache_scatter) or by the
lowering that moves it into the runtime (OpenVINO's stateful IR); every other module reads it from here:
its buffer shape, dtype, bytes per position and whether a rollback must cut the cache.
"""

from dataclasses import dataclass

ITEM_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}  # the KV cache dtypes and their item bytes


@dataclass(frozen=True)
class KVLayout:
    """One way a graph holds its KV cache.

    in_place: one buffer per layer and key/value is bound as both past and present (no copy per step).
    full_context: that buffer always holds max_context positions (else the generation's own capacity).
    truncate_on_rollback: positions past a rollback must be cut (a cache that grows by appending); a buffer
      addressed by the next step's mask width needs nothing.
    in_runtime: the cache is the runtime's own state (no KV inputs/outputs in the graph).
    rows_padded: sequences of a batch keep their left padding in the cache (slots line up with mask columns);
      else each sequence starts at slot 0 and a padded multi-token step runs one sequence at a time.
    """

    name: str
    in_place: bool
    full_context: bool
    truncate_on_rollback: bool
    in_runtime: bool
    rows_padded: bool

    def slots(self, capacity: int, max_context: int) -> int:
        """Positions one sequence's buffer holds for a generation of `capacity` positions."""
        return max_context if self.full_context else capacity

    def buffer_shape(self, batch: int, slots: int, num_kv_heads: int, head_dim: int) -> tuple[int, ...]:
        """The shape of one layer's key (or value) buffer: [batch, kv_heads, slots, head_dim]."""
        return (batch, num_kv_heads, slots, head_dim)


CONCAT = KVLayout("concat", in_place=False, full_context=False, truncate_on_rollback=True, in_runtime=False,
                  rows_padded=True)
SHARED_BUFFER = KVLayout("shared_buffer", in_place=True, full_context=False, truncate_on_rollback=False,
                         in_runtime=False, rows_padded=False)
SCATTER_BUFFER = KVLayout("scatter_buffer", in_place=True, full_context=True, truncate_on_rollback=False,
                          in_runtime=False, rows_padded=True)
STATEFUL = KVLayout("stateful", in_place=False, full_context=False, truncate_on_rollback=True, in_runtime=True,
                    rows_padded=True)
KV_LAYOUTS = {layout.name: layout for layout in (CONCAT, SHARED_BUFFER, SCATTER_BUFFER, STATEFUL)}


def kv_bytes_per_position(num_layers: int, num_kv_heads: int, head_dim: int, dtype: str) -> int:
    """Bytes one cached position takes in every layer's key and value, in the cache's dtype."""
    return 2 * num_layers * num_kv_heads * head_dim * ITEM_BYTES[dtype]

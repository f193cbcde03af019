"""The per-sequence cache contract the scheduler drives, and the KV memory accounting every cache shares.

A SequenceCache holds the cached context of many independent sequences, one *row* each (an integer handle the
cache gives out). The scheduler (runtimes/scheduler.py) only ever asks it to:

- prefill(prompts, reserve): allocate one row per prompt and run the prompts; the last position's logits.
  `reserve` is each row's worst case (prompt + new tokens), counted against the pool's budget at admission
  (can_admit), so no running sequence ever has to be evicted; memory itself is taken as rows grow.
- decode(rows, tokens): one new token for each listed row, in one batched step; the rows' logits.
- fork(row, n): n new rows continuing `row`'s context (n samples of one prompt prefill once).
- reorder(rows, parents): row i's context becomes a copy of parents[i]'s (beam search keeps the best beams).
- release(row): the row's memory goes back to the pool; the next request may take it.
- length(row): the positions the row holds (its next token's position: rows have their own lengths).

Two implementations: SlotPool (runtimes/slot_pool.py) for GroupQueryAttention's in-place buffers
(`shared_buffer`): a row is a slot of one [slots, kv_heads, capacity, head_dim] buffer per layer, every row from
position 0 at its own length, which the op takes natively (seqlens_k); and PaddedRows (runtimes/padded_rows.py)
for the layouts whose cache slots line up with attention-mask columns (`concat`, `scatter_buffer`, OpenVINO's
`stateful`): rows share one width, each row's positions right-aligned and the mask hiding the rest.

A recurrent model (Mamba-style: a fixed-size state per sequence, no positions) implements the same contract
with no KV at all: a row is a slot of a [slots, state...] tensor; prefill runs the prompt and leaves the final
state in the slot; decode steps the listed slots' states one token; fork copies the state (fixed size, no
length to copy); reorder gathers states; release frees the slot; length counts tokens seen (the state itself
has none, and nothing is ever truncated by length). `reserve` then costs one state per row, not positions:
`position_bytes` is 0 and `row_bytes` the state's size (memory()).
"""

from abc import ABC, abstractmethod

import numpy as np

from ..errors import LuodiError


class SequenceCache(ABC):
    """Many sequences' cached context, one row each (see the module docstring)."""

    def __init__(self, max_rows: int, kv_positions: int | None, position_bytes: int | None, row_bytes: int = 0):
        if max_rows < 1:
            raise LuodiError(f"the pool needs at least one row, got {max_rows}")
        self.max_rows, self.kv_positions = max_rows, kv_positions
        self.position_bytes, self.row_bytes = position_bytes, row_bytes
        self.reserved: dict[int, int] = {}  # row -> worst-case positions it was admitted with
        self._next_handle = 0
        self.peak = {"rows": 0, "positions_in_use": 0, "bytes_allocated": 0}
        self.reused_positions = 0  # prompt positions copied from a live row instead of computed (prefix reuse)

    # --- the contract (module docstring) ---
    @abstractmethod
    def prefill(self, prompts: list[list[int]], reserve: list[int]) -> tuple[list[int], np.ndarray]:
        """Allocate one row per prompt and run the prompts: (row handles, last-position logits [n, vocab])."""

    @abstractmethod
    def decode(self, rows: list[int], tokens: list[int]) -> np.ndarray:
        """One token for each listed row in one batched step: their logits [len(rows), vocab]."""

    @abstractmethod
    def fork(self, row: int, n: int) -> list[int]:
        """n new rows continuing row's context."""

    @abstractmethod
    def reorder(self, rows: list[int], parents: list[int]) -> None:
        """Row rows[i]'s context becomes a copy of parents[i]'s (all of them live rows)."""

    @abstractmethod
    def release(self, row: int) -> None:
        """Return the row's memory to the pool."""

    @abstractmethod
    def length(self, row: int) -> int:
        """Positions the row holds."""

    @abstractmethod
    def allocated_bytes(self) -> int:
        """Bytes of cache memory the pool holds now (buffers, padding included)."""

    # --- admission and accounting, shared ---
    @property
    def rows(self) -> list[int]:
        """The live rows."""
        return list(self.reserved)

    def can_admit(self, reserve: list[int]) -> bool:
        """Whether rows of these worst-case lengths fit beside the live ones (rows and the positions budget)."""
        if len(self.reserved) + len(reserve) > self.max_rows:
            return False
        return self.kv_positions is None or sum(self.reserved.values()) + sum(reserve) <= self.kv_positions

    def check_fits(self, reserve: list[int]) -> None:
        """Refuse a request the pool could never hold, even empty."""
        if len(reserve) > self.max_rows:
            raise LuodiError(f"{len(reserve)} sequences at once; the pool holds {self.max_rows} rows (max_rows)")
        if self.kv_positions is not None and sum(reserve) > self.kv_positions:
            raise LuodiError(f"the request needs {sum(reserve)} KV positions; the pool holds {self.kv_positions} "
                             "(kv_positions)")

    def _new_handles(self, reserve: list[int]) -> list[int]:
        handles = list(range(self._next_handle, self._next_handle + len(reserve)))
        self._next_handle += len(reserve)
        self.reserved.update(zip(handles, reserve))
        return handles

    def _forget(self, row: int) -> None:
        if row not in self.reserved:
            raise LuodiError(f"row {row} is not live in this pool")
        del self.reserved[row]

    def note_peak(self) -> None:
        """Record the high-water marks memory() reports (called after each operation that grows the pool)."""
        positions = sum(self.length(r) for r in self.reserved)
        for key, value in (("rows", len(self.reserved)), ("positions_in_use", positions),
                           ("bytes_allocated", self.allocated_bytes())):
            self.peak[key] = max(self.peak[key], value)

    def memory(self) -> dict:
        """What the pool holds now and at its peak: rows, positions in use (the sequences' real lengths) and
        their bytes, and the bytes of the buffers themselves (padding and unfilled capacity included)."""
        positions = sum(self.length(r) for r in self.reserved)
        per = self.position_bytes
        return {"max_rows": self.max_rows, "kv_positions_budget": self.kv_positions, "rows": len(self.reserved),
                "positions_in_use": positions,
                "bytes_in_use": None if per is None else positions * per + len(self.reserved) * self.row_bytes,
                "bytes_allocated": self.allocated_bytes(), "position_bytes": per,
                "peak_rows": self.peak["rows"], "peak_positions_in_use": self.peak["positions_in_use"],
                "peak_bytes_in_use": None if per is None else self.peak["positions_in_use"] * per,
                "peak_bytes_allocated": self.peak["bytes_allocated"], "reused_prefix_positions": self.reused_positions}


def cache_for(backend, pad_id: int, max_rows: int = 8, kv_positions: int | None = None) -> SequenceCache:
    """The SequenceCache for a backend's KV layout: slots for GroupQueryAttention's shared buffers, padded rows
    for every layout whose slots line up with mask columns; a one-line error for a backend that has neither."""
    from .padded_rows import PaddedRows
    from .slot_pool import SlotPool

    if SlotPool.takes(backend):
        return SlotPool(backend, max_rows, kv_positions)
    if PaddedRows.takes(backend):
        return PaddedRows(backend, pad_id, max_rows, kv_positions)
    raise LuodiError(f"the {backend.name} backend cannot run sequences that join and leave (no per-row KV cache)")

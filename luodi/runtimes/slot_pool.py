"""KV slots for GroupQueryAttention's in-place cache (`shared_buffer`): the SequenceCache of ONNX Runtime exports.

One [slots, kv_heads, capacity, head_dim] buffer per layer and key/value, bound as both past and present. A row
is a slot; every row holds its positions from 0 at its own length. A decode step runs the live slots 0..k-1
whole: the mask's row sums are the rows' lengths (GroupQueryAttention's seqlens_k writes each row's new
position at its own length and applies the rotary embedding at that position), its width the longest; nothing
is padded. Prompts of one length run together on consecutive new slots (the op's first-prompt case: no padding).

Memory follows the sequences' real lengths: the capacity grows (doubling, in blocks of `block` positions, up
to max context) only when a row outgrows it, and a slot's unwritten positions are zero pages the operating
system has not backed. Live slots stay packed at the front: a released slot is filled by moving the last live
row into it (a copy of its positions), so a step never computes a finished row. When the pool empties, the
buffers are dropped. fork and reorder copy a row's positions into other slots (the prompt is computed once,
its keys/values copied n - 1 times; no block reference counts: the op reads each row as one contiguous
[kv_heads, capacity, head_dim] block, so rows cannot share pages). A prompt that starts with at least
min_shared_prefix tokens of a live row's prompt (one system prompt) copies those positions the same way and
runs only its remaining tokens (batch 1 with a past: the op's subsequent-prompt case). A prompt identical to a
live row's prompt copies all its positions and takes the logits kept from that row's prefill, computing nothing:
its ids are exactly those of the prompt alone, whereas a remainder run as its own chunk may round differently
from the same positions inside one prefill (int4 MatMulNBits at accuracy level 4 does; fp32 did not, measured in
docs/BATCHING.md).
"""

import numpy as np

from ..contract.kv import SHARED_BUFFER, kv_bytes_per_position
from ..errors import ContextLengthError
from .sequence_cache import SequenceCache

BLOCK = 64  # positions the capacity grows by, at least
MIN_SHARED_PREFIX = 16  # a prompt starting with this many tokens of a live row's prompt reuses its positions


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class SlotPool(SequenceCache):
    """Rows as slots of GroupQueryAttention's shared buffers (module docstring)."""

    @staticmethod
    def takes(backend) -> bool:
        """Whether the backend runs GroupQueryAttention's shared buffers (an ONNX Runtime shared_buffer export)."""
        return backend.kv_layout is SHARED_BUFFER

    def __init__(self, backend, max_rows: int, kv_positions: int | None, block: int = BLOCK,
                 min_shared_prefix: int | None = MIN_SHARED_PREFIX):
        g = backend.kv.geometry
        super().__init__(max_rows, kv_positions,
                         kv_bytes_per_position(g.num_layers, g.kv_heads, g.head_dim, np.dtype(g.dtype).name))
        self.backend, self.kv, self.block = backend, backend.kv, block
        self.arrays: list[np.ndarray] | None = None
        self.slot: dict[int, int] = {}  # row -> slot, live slots packed at 0..k-1
        self.lengths: dict[int, int] = {}
        self.prompts: dict[int, list[int]] = {}  # row -> its prompt, which a later prompt may start with
        self.prompt_logits: dict[int, np.ndarray] = {}  # row -> its prompt's last logits (an identical prompt's)
        self.min_shared_prefix = min_shared_prefix
        self._binding = None  # (live slots, binding of the buffers' first live slots)

    def allocated_bytes(self) -> int:
        return sum(a.nbytes for a in self.arrays) if self.arrays else 0

    def length(self, row: int) -> int:
        return self.lengths[row]

    def _capacity(self) -> int:
        return self.arrays[0].shape[2] if self.arrays else 0

    def _ensure(self, positions: int) -> None:
        """Buffers of max_rows slots holding at least `positions` per slot (grown by copying the live slots)."""
        if positions > self.backend.max_context:
            raise ContextLengthError(f"a sequence needs {positions} KV positions; the max context is "
                                     f"{self.backend.max_context}")
        old = self._capacity()
        if positions <= old:
            return
        blocks = -(-max(positions, 2 * old) // self.block)
        capacity = min(blocks * self.block, self.backend.max_context)
        live = len(self.slot)
        arrays = [self.kv.buffer(self.max_rows, capacity) for _ in self.kv.past_names]
        for new, previous in zip(arrays, self.arrays or []):
            new[:live, :, :old] = previous[:live]
        self.arrays, self._binding = arrays, None

    def _bound(self, live: int):
        """The IO binding of the first `live` slots (kept while neither changes)."""
        if self._binding is None or self._binding[0] != live:
            self._binding = (live, self.kv.bind([a[:live] for a in self.arrays]))
        return self._binding[1]

    def prefill(self, prompts: list[list[int]], reserve: list[int]) -> tuple[list[int], np.ndarray]:
        """A prompt starting like a live row's (min_shared_prefix tokens or more) copies that row's positions and
        runs only the rest; the others run as one batch per length on consecutive new slots (GroupQueryAttention's
        first prompt takes a batch without padding). The logits in the prompts' order."""
        rows, logits = self._new_handles(reserve), [None] * len(prompts)
        self._ensure(max(len(p) for p in prompts) + 1)  # room for the first decoded token too
        sources = self._prefix_sources(prompts, rows)
        fresh = [i for i in range(len(prompts)) if i not in sources]
        for length in sorted({len(prompts[i]) for i in fresh}):
            group = [i for i in fresh if len(prompts[i]) == length]
            first = len(self.slot)
            for offset, i in enumerate(group):
                self.slot[rows[i]] = first + offset
            ids = np.asarray([prompts[i] for i in group], dtype=np.int64)
            for i, row_logits in zip(group, self._run(first, len(group), ids, 0)):
                logits[i] = self.prompt_logits[rows[i]] = row_logits.copy()
        for i, (source, shared) in sources.items():  # in order: a source may be a prompt reused just before
            self.slot[rows[i]] = len(self.slot)
            self._copy([self.slot[rows[i]]], [self.slot[source]], shared)
            if shared == len(prompts[i]):  # the same prompt: its logits are known
                logits[i] = self.prompt_logits[source]
            else:
                logits[i] = self._run(self.slot[rows[i]], 1, np.asarray([prompts[i][shared:]], dtype=np.int64),
                                      shared)[0]
            self.prompt_logits[rows[i]] = logits[i]
            self.reused_positions += shared
        for row, prompt in zip(rows, prompts):
            self.lengths[row], self.prompts[row] = len(prompt), prompt
        self.note_peak()
        return rows, np.stack(logits)

    def _prefix_sources(self, prompts: list[list[int]], rows: list[int]) -> dict[int, tuple[int, int]]:
        """{prompt index: (row whose positions it starts with, shared length)} for the prompts sharing at least
        min_shared_prefix tokens with a live row's prompt or an earlier prompt of the call (the longest). All of
        an identical prompt is shared; of any other, at least the last token is left to run."""
        candidates, sources = dict(self.prompts), {}
        for i, prompt in enumerate(prompts):
            shared, same, source = max(((_common_prefix(prompt, p), p == prompt, r) for r, p in candidates.items()),
                                       default=(0, False, None))
            if not same:
                shared = min(shared, len(prompt) - 1)
            if self.min_shared_prefix and shared >= self.min_shared_prefix:
                sources[i] = (source, shared)
            candidates[rows[i]] = prompt
        return sources

    def _run(self, first: int, count: int, ids: np.ndarray, past: int) -> np.ndarray:
        """Run new positions past..past+n of `count` consecutive slots from `first`; their last logits."""
        binding = self.kv.bind([a[first:first + count] for a in self.arrays])
        total = past + ids.shape[1]
        positions = np.ascontiguousarray(np.broadcast_to(np.arange(past, total, dtype=np.int64), ids.shape))
        return self.backend.run_bound(binding, ids, np.ones((count, total), dtype=np.int64), positions)[:, -1]

    def decode(self, rows: list[int], tokens: list[int]) -> np.ndarray:
        """Every live slot steps (a live row not listed is fed a pad token at its own length, which its next real
        step overwrites); each row's mask sum is its length + 1."""
        live = len(self.slot)
        order = sorted(self.slot, key=self.slot.get)
        lengths = np.array([self.lengths[r] for r in order], dtype=np.int64)
        self._ensure(int(lengths.max()) + 1)
        ids = np.zeros((live, 1), dtype=np.int64)
        for row, token in zip(rows, tokens):
            ids[self.slot[row], 0] = token
        width = int(lengths.max()) + 1
        mask = (np.arange(width)[None] < (lengths[:, None] + 1)).astype(np.int64)
        logits = self.backend.run_bound(self._bound(live), ids, mask, lengths[:, None])[:, -1]
        for row in rows:
            self.lengths[row] += 1
        self.note_peak()
        return logits[[self.slot[r] for r in rows]]

    def _copy(self, targets: list[int], sources: list[int], length: int) -> None:
        """Slot sources[i]'s first `length` positions into slot targets[i] (sources read before any is written)."""
        if set(targets) & set(sources):
            for a in self.arrays:
                a[targets, :, :length] = a[sources, :, :length]
            return
        for a in self.arrays:
            for target, source in zip(targets, sources):
                a[target, :, :length] = a[source, :, :length]

    def fork(self, row: int, n: int) -> list[int]:
        """n new slots holding a copy of the row's positions."""
        new = self._new_handles([self.reserved[row]] * n)
        for handle in new:
            self.slot[handle], self.lengths[handle] = len(self.slot), self.lengths[row]
            self.prompts[handle], self.prompt_logits[handle] = self.prompts[row], self.prompt_logits[row]
        self._copy([self.slot[h] for h in new], [self.slot[row]] * n, self.lengths[row])
        self.note_peak()
        return new

    def reorder(self, rows: list[int], parents: list[int]) -> None:
        """Copy each parent's positions into its row's slot (gathered first, so rows may be each other's parents)."""
        moved = [(r, p) for r, p in zip(rows, parents) if r != p]
        if not moved:
            return
        length = max(self.lengths[p] for _, p in moved)
        self._copy([self.slot[r] for r, _ in moved], [self.slot[p] for _, p in moved], length)
        for r, p in moved:
            self.lengths[r] = self.lengths[p]

    def release(self, row: int) -> None:
        """Free the row's slot; the last live row moves into it, so live slots stay packed."""
        self._forget(row)
        slot, last = self.slot.pop(row), len(self.slot)
        del self.lengths[row], self.prompts[row], self.prompt_logits[row]
        if slot != last:
            moving = next(r for r, s in self.slot.items() if s == last)
            self._copy([slot], [last], self.lengths[moving])
            self.slot[moving] = slot
        if not self.slot:
            self.arrays, self._binding = None, None

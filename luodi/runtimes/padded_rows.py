"""Rows of one padded batch: the SequenceCache of layouts whose cache slots line up with attention-mask columns.

ONNX Runtime's `concat` and `scatter_buffer` graphs and OpenVINO's `stateful` IR hold a batch's cache as
[rows, kv_heads, width, head_dim] with every row as wide as the longest: a row's positions sit in the columns
its mask marks, right-aligned, and the mask hides the rest (position ids count only a row's own positions, so
each row has its own length). The batch lives in one backend state; this class keeps its mask and the handle of
each batch row, and edits the state through the backend's row operations (Backend.kv_arrays / set_kv_arrays /
gather_rows):

- joining rows are prefilled together in a state of their own (left-padded), then merged: both caches padded on
  the left to the wider width and stacked (a copy of the live cache);
- fork, reorder and release are a gather of batch rows (OpenVINO: the next step's beam_idx, no copy here;
  ONNX Runtime: a copy), so a finished row leaves the batch and no step computes it;
- leading columns no row uses any more are cut when the cache is rewritten anyway (a merge), or once they are a
  quarter of the width.

OpenVINO permits this because its stateful IR gathers every KV variable by beam_idx before a step (rows may be
dropped, repeated, reordered) and its variables can be read and set between steps (query_state); rows of
different lengths in one stateful batch need the mask (left padding), exactly as a left-padded batch does.
"""

import numpy as np

from ..contract.kv import kv_bytes_per_position
from ..errors import LuodiError
from .sequence_cache import SequenceCache

TRIM_FRACTION = 4  # cut unused leading columns once they are 1/TRIM_FRACTION of the width


def _pad_left(array: np.ndarray, width: int, axis: int) -> np.ndarray:
    missing = width - array.shape[axis]
    if missing == 0:
        return array
    pad = [(0, 0)] * array.ndim
    pad[axis] = (missing, 0)
    return np.pad(array, pad)


def _position_bytes(backend) -> int | None:
    """Bytes per cached position, where the backend says what its cache is made of."""
    spec, dtype = getattr(backend, "spec", None), getattr(backend, "kv_dtype", None)
    if spec is None or dtype is None:
        return None
    return kv_bytes_per_position(spec.num_layers, spec.num_kv_heads, spec.head_dim, dtype)


class PaddedRows(SequenceCache):
    """Rows of one left-padded batch state (module docstring)."""

    @staticmethod
    def takes(backend) -> bool:
        """Whether the backend's cache lines up with mask columns and it hands out its rows (ONNX Runtime concat and
        scatter_buffer, OpenVINO, a TensorRT engine)."""
        layout = backend.kv_layout
        return layout is not None and layout.rows_padded

    def __init__(self, backend, pad_id: int, max_rows: int, kv_positions: int | None):
        if backend.max_batch is not None and max_rows > backend.max_batch:
            raise LuodiError(f"a pool of {max_rows} rows; this model runs at most {backend.max_batch} sequences "
                             "at once (its engine's profiles)")
        super().__init__(max_rows, kv_positions, _position_bytes(backend))
        self.backend, self.pad_id = backend, pad_id
        self.state = None
        self.mask = np.zeros((0, 0), dtype=np.int64)  # [rows, width]: which columns hold each row's positions
        self.order: list[int] = []  # the handle of each batch row

    def allocated_bytes(self) -> int:
        """Rows x width (max context for a full-context buffer) x bytes per position."""
        width = self.backend.max_context if self.backend.kv_layout.full_context else self.mask.shape[1]
        return self.mask.shape[0] * width * (self.position_bytes or 0)

    def length(self, row: int) -> int:
        return int(self.mask[self.order.index(row)].sum())

    def prefill(self, prompts: list[list[int]], reserve: list[int]) -> tuple[list[int], np.ndarray]:
        """The prompts left-padded in a state of their own, then merged into the batch."""
        longest = max(len(p) for p in prompts)
        ids = np.full((len(prompts), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, prompt in enumerate(prompts):
            ids[i, longest - len(prompt):], mask[i, longest - len(prompt):] = prompt, 1
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        state = self.backend.new_state(len(prompts), self.backend.max_context)
        logits = self.backend.forward_window(state, ids, mask, positions)[:, -1]
        self._merge(state, mask)
        rows = self._new_handles(reserve)
        self.order += rows
        self.note_peak()
        return rows, logits

    def _merge(self, state, mask: np.ndarray) -> None:
        """Stack a new state's rows under the batch's, both padded on the left to the wider width."""
        if self.state is None:
            self.state, self.mask = state, mask
            self._trim()
            return
        width = max(self.mask.shape[1], mask.shape[1])
        live, joining = self.backend.kv_arrays(self.state), self.backend.kv_arrays(state)
        merged = {name: np.concatenate([_pad_left(live[name], width, 2), _pad_left(joining[name], width, 2)])
                  for name in live}
        self.mask = np.concatenate([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)])
        self._trim(merged)

    def _trim(self, arrays: dict | None = None, threshold: int = 1) -> None:
        """Cut leading columns no row uses (when at least `threshold`), writing the arrays into the state."""
        used = np.flatnonzero(self.mask.any(axis=0))
        lead = int(used[0]) if used.size else self.mask.shape[1]
        if arrays is None and lead < threshold:
            return
        if arrays is None:
            arrays = self.backend.kv_arrays(self.state)
        if lead:
            arrays = {name: a[:, :, lead:] for name, a in arrays.items()}
            self.mask = self.mask[:, lead:]
        self.backend.set_kv_arrays(self.state, arrays)

    def decode(self, rows: list[int], tokens: list[int]) -> np.ndarray:
        """One step of the whole batch; a row not listed gets a hidden column (mask 0)."""
        ids = np.full((len(self.order), 1), self.pad_id, dtype=np.int64)
        column = np.zeros((len(self.order), 1), dtype=np.int64)
        index = [self.order.index(r) for r in rows]
        ids[index, 0], column[index, 0] = tokens, 1
        positions = self.mask.sum(axis=1, keepdims=True)
        self.mask = np.concatenate([self.mask, column], axis=1)
        logits = self.backend.forward_window(self.state, ids, self.mask, positions)[:, -1]
        self.note_peak()
        return logits[index]

    def _gather(self, index: list[int]) -> None:
        self.backend.gather_rows(self.state, np.asarray(index))
        self.mask = self.mask[index]

    def fork(self, row: int, n: int) -> list[int]:
        """n more batch rows gathering `row`'s cache."""
        source = self.order.index(row)
        self._gather(list(range(len(self.order))) + [source] * n)
        new = self._new_handles([self.reserved[row]] * n)
        self.order += new
        self.note_peak()
        return new

    def reorder(self, rows: list[int], parents: list[int]) -> None:
        """Each row gathers its parent's cache."""
        index = list(range(len(self.order)))
        for row, parent in zip(rows, parents):
            index[self.order.index(row)] = self.order.index(parent)
        if index != list(range(len(index))):
            self._gather(index)

    def release(self, row: int) -> None:
        """Drop the row from the batch (the state too once no row is left)."""
        self._forget(row)
        keep = [i for i, r in enumerate(self.order) if r != row]
        self.order.remove(row)
        if not self.order:
            self.state, self.mask = None, np.zeros((0, 0), dtype=np.int64)
            return
        self._gather(keep)
        self._trim(threshold=max(1, self.mask.shape[1] // TRIM_FRACTION))

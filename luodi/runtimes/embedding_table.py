"""Token embeddings read row by row from an export's data file, for graphs that take `inputs_embeds`.

The embedding_input pass leaves the lookup to the runtime so that no mapping of the table is ever made: a
step's rows are copied from the file (the page cache keeps them warm), and the process's resident memory holds
only those rows, not the 2 MB page-cache folios around each one that a mapped lookup would keep. The manifest
locates the table (`embedding_table`: file, byte offset, shape, dtype), so reading it needs no onnx package.
"""

import os
import threading
from pathlib import Path

import numpy as np

from ..contract.graph import INPUTS_EMBEDS
from ..contract.manifest import EmbeddingTableRef
from ..errors import CorruptModelError, LuodiError

DTYPES = {"float32": np.float32, "float16": np.float16}


class EmbeddingTable:
    """Rows [vocab, hidden] of one tensor stored in a file of the model's folder, looked up by token id."""

    def __init__(self, folder: Path, entry: EmbeddingTableRef):
        folder = Path(folder).resolve()
        try:
            self.path = (folder / entry.file).resolve()
            self.offset, self.shape = int(entry.offset), tuple(int(n) for n in entry.shape)
            self.dtype = np.dtype(DTYPES[entry.dtype])
        except (KeyError, TypeError, ValueError):
            raise CorruptModelError(f"{folder}: the manifest's embedding_table entry is malformed: {entry!r}") from None
        if not self.path.is_relative_to(folder) or not self.path.is_file():
            raise CorruptModelError(f"{folder}: the embedding table's file {entry.file!r} is missing or "
                                    "outside the model's folder")
        if len(self.shape) != 2 or min(self.shape) < 1 or self.offset < 0:
            raise CorruptModelError(f"{folder}: bad embedding table shape {self.shape} or offset {self.offset}")
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        end, size = self.offset + self.shape[0] * self.row_bytes, self.path.stat().st_size
        if size < end:
            raise CorruptModelError(f"{self.path}: {size} bytes, but the embedding table ends at byte {end} "
                                    "(truncated?)")
        self._file = open(self.path, "rb", buffering=0)  # unbuffered: each read is one row, from the page cache
        self._lock = threading.Lock()  # generations on several threads share the file (where there is no preadv)

    @classmethod
    def for_graph(cls, input_names, folder: Path, entry: EmbeddingTableRef | None) -> "EmbeddingTable | None":
        """The table a graph that takes inputs_embeds (embedding_input) needs, from its manifest's entry; None
        for a graph that takes token ids."""
        if INPUTS_EMBEDS not in input_names:
            return None
        if entry is None:
            raise CorruptModelError(f"{folder}: the graph takes {INPUTS_EMBEDS} but the manifest locates no "
                                    "embedding table")
        return cls(folder, entry)

    def __call__(self, token_ids: np.ndarray) -> np.ndarray:
        """The rows of these ids, shaped [*ids.shape, hidden]."""
        ids = np.asarray(token_ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.shape[0]):
            raise LuodiError(f"token id out of range: the embedding table has {self.shape[0]} rows, got ids "
                             f"{int(ids.min())}..{int(ids.max())}")
        unique, inverse = np.unique(ids, return_inverse=True)
        rows = np.empty((len(unique), self.shape[1]), self.dtype)
        for row, token in zip(rows, unique.tolist()):
            if self._read(memoryview(row).cast("B"), self.offset + token * self.row_bytes) != self.row_bytes:
                raise CorruptModelError(f"{self.path}: short read of the embedding table (file changed?)")
        return rows[inverse.reshape(ids.shape)]

    def _read(self, buffer: memoryview, offset: int) -> int:
        """Read into buffer from this byte of the file; safe from several threads at once."""
        if hasattr(os, "preadv"):  # positioned: no shared file offset
            return os.preadv(self._file.fileno(), [buffer], offset)
        with self._lock:
            self._file.seek(offset)
            return self._file.readinto(buffer)

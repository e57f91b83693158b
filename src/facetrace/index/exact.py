"""Exact search: a NumPy matrix of unit vectors, scored by brute-force inner product.

The reference backend: every result is the true top-k, so it is what the ANN backend is
measured against and what small galleries use. Search costs one matrix product over all
vectors (tens of milliseconds per query at a million faces on one core).

Rows live in ``_vectors[:_n]`` (float32, unit length) beside ``_ids[:_n]``; removal moves
the last row into the hole, so row order is not insertion order. Saved as two ``.npy``
files (ids, vectors) under the manifest described in ``facetrace.index.base``. Opened
with ``mmap=True`` the vectors stay in the file (read-only, shared between processes)
until the first change copies them into memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from facetrace.index.base import (
    SavedIndex,
    check_add,
    check_ids,
    check_search,
    corrupt,
    empty_results,
    load_array,
    npy_writer,
    read_saved,
    save_index,
)

_IDS_FILE = "ids.npy"
_VECTORS_FILE = "vectors.npy"
# Score at most this many (query, vector) pairs at once, to bound memory.
_SCORE_BLOCK = 1 << 24


class ExactIndex:
    """Brute-force cosine search over an in-memory (or memory-mapped) matrix."""

    backend: ClassVar[str] = "exact"

    def __init__(self, dim: int, *, meta: dict[str, Any] | None = None) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, not {dim}")
        self.dim = dim
        self.meta: dict[str, Any] = dict(meta or {})
        self._ids = np.empty(0, dtype=np.int64)
        self._vectors = np.empty((0, dim), dtype=np.float32)
        self._n = 0
        self._pos: dict[int, int] | None = None  # id -> row, built on first change

    # --- changes ----------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        id_arr, vec_arr = check_add(ids, vectors, self.dim)
        if id_arr.size == 0:
            return
        pos = self._positions()
        rows = np.fromiter((pos.get(i, -1) for i in id_arr.tolist()), np.int64, id_arr.size)
        old = rows >= 0
        new = ~old
        self._reserve(self._n + int(new.sum()))
        self._vectors[rows[old]] = vec_arr[old]
        n_new = int(new.sum())
        if n_new:
            start, stop = self._n, self._n + n_new
            self._ids[start:stop] = id_arr[new]
            self._vectors[start:stop] = vec_arr[new]
            pos.update(zip(id_arr[new].tolist(), range(start, stop), strict=True))
            self._n = stop

    def remove(self, ids: np.ndarray) -> int:
        id_arr = np.unique(check_ids(ids))
        pos = self._positions()
        present = [i for i in id_arr.tolist() if i in pos]
        if not present:
            return 0
        self._reserve(self._n)
        for i in present:
            row = pos.pop(i)
            last = self._n - 1
            if row != last:
                moved = int(self._ids[last])
                self._ids[row] = moved
                self._vectors[row] = self._vectors[last]
                pos[moved] = row
            self._n = last
        return len(present)

    def _positions(self) -> dict[int, int]:
        if self._pos is None:
            self._pos = dict(zip(self._ids[: self._n].tolist(), range(self._n), strict=True))
        return self._pos

    def _reserve(self, rows: int) -> None:
        """Make the arrays writable in memory with room for ``rows`` rows."""
        capacity = self._vectors.shape[0]
        if rows <= capacity and self._vectors.flags.writeable and self._ids.flags.writeable:
            return
        capacity = max(rows, 2 * capacity if rows > capacity else capacity, 1024)
        vectors = np.empty((capacity, self.dim), dtype=np.float32)
        vectors[: self._n] = self._vectors[: self._n]
        ids = np.empty(capacity, dtype=np.int64)
        ids[: self._n] = self._ids[: self._n]
        self._vectors, self._ids = vectors, ids

    # --- queries ----------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_search(queries, k, self.dim)
        out_ids, out_scores = empty_results(q.shape[0], k)
        n = self._n
        if n == 0:
            return out_ids, out_scores
        take = min(k, n)
        matrix = self._vectors[:n]
        ids = self._ids[:n]
        block = max(1, _SCORE_BLOCK // n)
        for start in range(0, q.shape[0], block):
            scores = q[start : start + block] @ matrix.T
            if take < n:
                top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
            else:
                top = np.broadcast_to(np.arange(n), scores.shape)
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            rows = np.take_along_axis(top, order, axis=1)
            out_ids[start : start + block, :take] = ids[rows]
            out_scores[start : start + block, :take] = np.take_along_axis(top_scores, order, axis=1)
        return out_ids, out_scores

    def __len__(self) -> int:
        return self._n

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, unit float32 vectors) of every face present: views, not copies."""
        return self._ids[: self._n], self._vectors[: self._n]

    def ids(self) -> np.ndarray:
        return self._ids[: self._n].copy()

    # --- files ------------------------------------------------------------------

    def writers(self) -> dict[str, Any]:
        """The data files of this index, for ``save_index``: suffix -> writer."""
        return {
            _IDS_FILE: npy_writer(self._ids[: self._n]),
            _VECTORS_FILE: npy_writer(self._vectors[: self._n]),
        }

    def save(self, path: Path) -> None:
        save_index(
            path,
            backend=self.backend,
            dim=self.dim,
            count=self._n,
            params={},
            meta=self.meta,
            writers=self.writers(),
        )

    @classmethod
    def open(cls, path: Path, dim: int, *, mmap: bool = True, verify: bool = True) -> ExactIndex:
        """Load the index saved at ``path`` (which must exist); IndexCorruptError if damaged."""
        saved = read_saved(path, backend=cls.backend, dim=dim, verify=verify)
        return cls.from_saved(saved, mmap=mmap)

    @classmethod
    def from_saved(cls, saved: SavedIndex, *, mmap: bool = True) -> ExactIndex:
        """The index in ``saved``'s ids and vectors files (also used by ``scann`` before it
        trains); IndexCorruptError if they are not exactly those two, or damaged."""
        if set(saved.files) != {_IDS_FILE, _VECTORS_FILE}:
            raise corrupt(saved.path, f"expected {_IDS_FILE} and {_VECTORS_FILE} files")
        dim = saved.dim
        ids_path, vectors_path = saved.files[_IDS_FILE], saved.files[_VECTORS_FILE]
        ids = load_array(ids_path, np.int64, (saved.count,), "ids")
        vectors = load_array(vectors_path, np.float32, (saved.count, dim), "vectors", mmap=mmap)
        if saved.count and (int(ids.min()) < 0 or np.unique(ids).size != saved.count):
            raise corrupt(ids_path, "ids are negative or repeated")
        index = cls(dim, meta=saved.meta)
        ids.flags.writeable = False  # copied on the first change, like a mapped matrix
        index._ids, index._vectors, index._n = ids, vectors, saved.count
        return index

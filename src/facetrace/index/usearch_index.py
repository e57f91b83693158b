"""Approximate search with usearch's HNSW graph: the default backend for large galleries.

Metric ``cos`` on unit vectors, so ``score = 1 - distance`` is the cosine similarity
(``ip`` would be as good for f32/f16 but gives meaningless scores with i8 quantisation).
Vectors are stored as ``f32`` by default; ``f16`` halves memory at no measured cost in
recall; ``i8`` quarters it but its scores are off by up to 1e-2, which reorders close
dlib faces (see docs/index-backends.md). Graph: connectivity 16, expansion_add 128,
expansion_search 256 (at 100k face-like vectors, 64 found 97.2% of same-person matches
and 256 found 99.4%, for about 1 ms a query); a search asking for more than
``expansion_search`` results widens its breadth to ``k``.

Upsert is remove-then-add (usearch refuses duplicate keys). usearch keeps removed
entries as tombstones, reused by later adds; they are never returned by a search.

Adds run on one thread by default (``add_threads=1``). With concurrent insertion usearch
2.26 left 0.01-0.75% of vectors unreachable in the graph: never returned, not even for
their own vector at a breadth of 2,048 (clustered face-like vectors, indexes of 300 to
20,000; none in over 100,000 single-threaded inserts). One thread builds about half as
fast on two idle cores. Searches use every core unless ``threads`` says otherwise.

Opened with ``mmap=True`` the index is a usearch *view* of the file. A view must never
be changed: usearch 2.26 segfaults on add or remove there. The first change therefore
copies the view into memory. Files are checked against their SHA-256 before usearch
reads them, because usearch loads some damaged files silently (garbage vectors) and
could crash on others.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# usearch's wheel carries its own libstdc++ and exports its symbols: onnxruntime (the
# embedder) loaded after it crashes the process. Loaded first, both work.
with contextlib.suppress(ImportError):
    import onnxruntime  # noqa: F401

from usearch.index import BatchMatches, Index, MetricKind, ScalarKind  # noqa: E402

from facetrace.errors import ConfigError
from facetrace.index.base import (
    check_add,
    check_ids,
    check_search,
    corrupt,
    empty_results,
    read_single,
    save_index,
)

DTYPES = ("f32", "f16", "i8")
_SCALAR_KINDS = {"f32": ScalarKind.F32, "f16": ScalarKind.F16, "i8": ScalarKind.I8}
_FILE = "usearch"


class UsearchIndex:
    """HNSW approximate cosine search (usearch)."""

    backend: ClassVar[str] = "usearch"

    def __init__(
        self,
        dim: int,
        *,
        dtype: str = "f32",
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 256,
        threads: int = 0,
        add_threads: int = 1,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, not {dim}")
        if dtype not in DTYPES:
            raise ConfigError(f"usearch dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        self.dim = dim
        self.dtype = dtype
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.expansion_search = expansion_search
        self.threads = threads  # for searches; 0: all cores
        self.add_threads = add_threads  # for adds; see the module docstring
        self.meta: dict[str, Any] = dict(meta or {})
        self._index = self._new_index()
        self._is_view = False

    def _new_index(self) -> Index:
        return Index(
            ndim=self.dim,
            metric="cos",
            dtype=self.dtype,
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=self.expansion_search,
        )

    def _writable(self) -> Index:
        """The usearch index, copied into memory first if it is a view of a file."""
        if self._is_view:
            self._index = self._index.copy()
            self._is_view = False
        return self._index

    # --- changes ----------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        id_arr, vec_arr = check_add(ids, vectors, self.dim)
        if id_arr.size == 0:
            return
        index = self._writable()
        keys = id_arr.astype(np.uint64)
        present = np.asarray(index.contains(keys), dtype=bool).reshape(-1)
        if present.any():
            index.remove(keys[present])
        index.add(keys, vec_arr, threads=self.add_threads)

    def remove(self, ids: np.ndarray) -> int:
        id_arr = np.unique(check_ids(ids))
        if id_arr.size == 0 or len(self._index) == 0:
            return 0
        keys = id_arr.astype(np.uint64)
        present = np.asarray(self._index.contains(keys), dtype=bool).reshape(-1)
        if not present.any():
            return 0
        removed = self._writable().remove(keys[present])
        return int(np.sum(removed))

    # --- queries ----------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_search(queries, k, self.dim)
        m = q.shape[0]
        out_ids, out_scores = empty_results(m, k)
        if m == 0 or len(self._index) == 0:
            return out_ids, out_scores
        # usearch declares the setter in a way mypy does not see.
        self._index.expansion_search = max(self.expansion_search, k)  # type: ignore[misc]
        found = self._index.search(q, k, threads=self.threads)
        if isinstance(found, BatchMatches):
            keys = np.asarray(found.keys).reshape(m, k)
            distances = np.asarray(found.distances).reshape(m, k)
            valid = np.arange(k)[None, :] < np.asarray(found.counts).reshape(m, 1)
        else:  # one query: a Matches with only the hits
            keys = np.zeros((1, k), dtype=np.uint64)
            distances = np.zeros((1, k), dtype=np.float32)
            hits = len(found.keys)
            keys[0, :hits] = found.keys
            distances[0, :hits] = found.distances
            valid = np.arange(k)[None, :] < hits
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        scores[valid] = 1.0 - distances[valid]  # padding slots hold garbage, even NaN
        order = np.argsort(-scores, axis=1, kind="stable")
        out_scores[:] = np.take_along_axis(scores, order, axis=1)
        sorted_keys = np.take_along_axis(keys.astype(np.int64), order, axis=1)
        out_ids[:] = np.where(np.take_along_axis(valid, order, axis=1), sorted_keys, -1)
        return out_ids, out_scores

    def __len__(self) -> int:
        return len(self._index)

    def ids(self) -> np.ndarray:
        n = len(self._index)
        if n == 0:
            return np.empty(0, dtype=np.int64)
        return np.asarray(self._index.keys[0:n]).astype(np.int64)

    # --- files ------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "metric": "cos",
            "connectivity": self.connectivity,
            "expansion_add": self.expansion_add,
            "expansion_search": self.expansion_search,
        }

    def save(self, path: Path) -> None:
        index = self._index

        def write(tmp: Path) -> None:
            index.save(str(tmp))

        save_index(
            path,
            backend=self.backend,
            dim=self.dim,
            count=len(index),
            params=self._params(),
            meta=self.meta,
            writers={_FILE: write},
        )

    @classmethod
    def open(
        cls, path: Path, dim: int, *, mmap: bool = True, verify: bool = True, threads: int = 0
    ) -> UsearchIndex:
        """Load the index saved at ``path`` (which must exist); IndexCorruptError if damaged.

        With ``verify=False`` the SHA-256 check is skipped: faster for a big index, but
        a damaged file may then crash the process instead of raising.
        """
        saved, data = read_single(path, backend=cls.backend, dim=dim, suffix=_FILE, verify=verify)
        p = saved.params
        try:
            index = cls(
                dim,
                dtype=str(p["dtype"]),
                connectivity=int(p["connectivity"]),
                expansion_add=int(p["expansion_add"]),
                expansion_search=int(p["expansion_search"]),
                threads=threads,
                meta=saved.meta,
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise corrupt(saved.path, f"bad usearch parameters {p!r}: {exc}") from None
        try:
            header = Index.metadata(str(data))
        except (RuntimeError, ValueError, OSError) as exc:
            raise corrupt(data, f"not a usearch index: {exc}") from None
        expected = {
            "dimensions": dim,
            "kind_metric": MetricKind.Cos,
            "kind_scalar": _SCALAR_KINDS[index.dtype],
            "count_present": saved.count,
        }
        for key, want in expected.items():
            if header is None or header.get(key) != want:
                got = None if header is None else header.get(key)
                raise corrupt(data, f"usearch header has {key}={got!r}, expected {want!r}")
        try:
            if mmap:
                index._index.view(str(data))
            else:
                index._index.load(str(data))
        except (RuntimeError, ValueError, OSError) as exc:
            raise corrupt(data, f"usearch cannot read it: {exc}") from None
        index._is_view = mmap
        if len(index._index) != saved.count:
            raise corrupt(data, f"{len(index._index)} vectors where {saved.count} were saved")
        return index

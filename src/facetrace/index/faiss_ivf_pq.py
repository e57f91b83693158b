"""Inverted lists of 4-bit product codes, re-ranked on stored vectors: ``ivf-pq``.

The ``ivf`` backend reads every float of every list it probes. On face embeddings a
query must probe about an eighth of the gallery for recall@10 0.99, so at ten million
faces that is some 640 MB per query. Here the lists hold 4-bit product-quantisation
codes (``m`` sub-quantisers of 16 centroids: ``m / 2`` bytes a face, 64 by default)
that FAISS scans with SIMD register lookups (``IndexIVFPQFastScan``), several times
faster per face than floats. The ``k * k_factor`` best by code are then re-ranked by
their exact cosine on the stored vectors (``refine``: float32, or float16 for half the
memory), so the scores returned are exact and the order is exact among the candidates.

- Below ``train_at`` faces (default 20,000) there are no codes: every search is exact
  over the stored vectors.
- From ``train_at``: k-means lists (``nlist``, as ``ivf``: ``4 * sqrt(n)``, a power of
  two, at most 4,096) and product codes are trained on a fixed-seed sample, and every
  face is coded. Past ``regrow`` times that size, the next add trains again.
- Deletion is immediate: each list holding a removed face is rewritten without it (its
  other faces coded again, a few thousand at ten million faces), so the face is never a
  candidate again; its stored vector is dropped at the next save.
- Upsert is remove then add.

Files: ``ids.npy`` and ``vectors.npy`` (the live faces only) and, once trained,
``faiss`` (the coded lists), under the manifest of ``facetrace.index.base``. Opening maps
``vectors.npy`` (read-only; the first add copies it into memory) and reads the lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import faiss as faiss_module
import numpy as np

from facetrace.errors import ConfigError
from facetrace.index.base import (
    SortedIds,
    check_add,
    check_ids,
    check_search,
    corrupt,
    empty_results,
    grown,
    load_array,
    npy_writer,
    read_saved,
    room_for,
    save_index,
)
from facetrace.index.faiss_ivf import (
    DEFAULT_TRAIN_AT,
    TRAIN_SEED,
    TrainsLists,
    check_list_options,
    training_sample,
)

faiss: Any = faiss_module

REFINE = {"f32": np.float32, "fp16": np.float16}
DEFAULT_NPROBE = 512
DEFAULT_K_FACTOR = 64
_BITS = 4
_CHUNK = 1 << 18  # rows converted to float32 at a time
_FILES = ("ids.npy", "vectors.npy", "faiss")
_GUESS_LISTS = 4  # lists looked in first for a removed face: its nearest centroids


class VectorStore:
    """Vectors by id, appended in rows; rows of removed ids are only marked dead.

    Lookup by id goes through a sorted copy of the ids, rebuilt lazily (face ids arrive
    in increasing order, so appends usually extend it). Capacity grows by an eighth.
    """

    def __init__(self, dim: int, dtype: Any, ids: Any = None, vectors: Any = None) -> None:
        self.dim, self.dtype = dim, np.dtype(dtype)
        self.ids: np.ndarray = np.empty(0, np.int64) if ids is None else ids
        self.vectors: np.ndarray = np.empty((0, dim), self.dtype) if vectors is None else vectors
        self.n = int(self.ids.size)
        self.alive = np.ones(self.n, dtype=bool)
        self.live = self.n
        self._sorted = SortedIds()

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        need = self.n + ids.size
        if need > self.ids.size:
            cap = room_for(need, self.ids.size)
            self.ids = grown(self.ids, self.n, cap)
            self.vectors = grown(self.vectors, self.n, cap)
            self.alive = grown(self.alive, self.n, cap)
        self.ids[self.n : need] = ids
        self.vectors[self.n : need] = vectors.astype(self.dtype, copy=False)
        self.alive[self.n : need] = True
        self._sorted.extend(ids, np.arange(self.n, need, dtype=np.int64))
        self.n, self.live = need, self.live + ids.size

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The live row of each id, or -1."""
        if self._sorted.stale:
            self._sorted.reset(self.ids[: self.n], np.arange(self.n))
        sid, srow = self._sorted.arrays()
        rows = np.full(ids.size, -1, dtype=np.int64)
        pos = np.searchsorted(sid, ids)
        pending = np.arange(ids.size)
        while pending.size:  # an id removed and added again has dead rows before its live one
            p = pos[pending]
            inside = p < sid.size
            pending, p = pending[inside], p[inside]
            same = sid[p] == ids[pending]
            pending, p = pending[same], p[same]
            r = srow[p]
            alive = self.alive[r]
            rows[pending[alive]] = r[alive]
            pending = pending[~alive]
            pos[pending] += 1
        return rows

    def kill(self, rows: np.ndarray) -> None:
        self.alive[rows] = False
        self.live -= rows.size

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.alive[: self.n])

    def float_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.vectors[rows], dtype=np.float32)

    def live_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(live rows, their vectors as float32): a view, not a copy, of float32 vectors
        when no row is dead."""
        if self.live == self.n:
            return np.arange(self.n), np.asarray(self.vectors[: self.n], dtype=np.float32)
        rows = self.live_rows()
        return rows, self.float_rows(rows)


class FaissIvfPqIndex(TrainsLists):
    """Cosine search: 4-bit product codes in FAISS inverted lists, re-ranked exactly."""

    backend: ClassVar[str] = "ivf-pq"

    def __init__(
        self,
        dim: int,
        *,
        m: int | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        k_factor: int = DEFAULT_K_FACTOR,
        refine: str = "f32",
        train_at: int = DEFAULT_TRAIN_AT,
        regrow: float = 8.0,
        expect: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        check_list_options(
            "ivf-pq",
            dim,
            nlist=nlist,
            nprobe=nprobe,
            k_factor=k_factor,
            train_at=train_at,
            regrow=regrow,
            expect=expect or None,
        )
        m = m or dim
        if m < 2 or m % 2 or dim % m:
            raise ConfigError(f"ivf-pq m must be even and divide {dim}, not {m}")
        if refine not in REFINE:
            raise ConfigError(f"ivf-pq refine must be one of {', '.join(REFINE)}, not {refine!r}")
        self.dim, self.m, self.nlist, self.refine = dim, m, nlist, refine
        self.nprobe = nprobe or DEFAULT_NPROBE
        self.k_factor, self.train_at, self.regrow = k_factor, train_at, regrow
        self.expect = expect
        self.meta: dict[str, Any] = dict(meta or {})
        self.trained_size = 0
        self.store = VectorStore(dim, REFINE[refine])
        self._pq: Any = None

    # --- changes ----------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        id_arr, vec_arr = check_add(ids, vectors, self.dim)
        if id_arr.size == 0:
            return
        self.remove(id_arr)
        self.store.append(id_arr, vec_arr)
        if self._needs_training(self.store.live):
            self._train()
        elif self._pq is not None:
            self._pq.add_with_ids(vec_arr, id_arr)

    def _train(self) -> None:
        rows = self.store.live_rows()
        n = rows.size
        nlist = self._lists_for(n)
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQFastScan(
            quantizer, self.dim, nlist, self.m, _BITS, faiss.METRIC_INNER_PRODUCT
        )
        index.own_fields = True
        quantizer.this.disown()
        index.cp.seed = TRAIN_SEED
        picked = training_sample(n, nlist)
        index.train(self.store.float_rows(rows if picked is None else rows[picked]))
        for start in range(0, n, _CHUNK):  # float32 copies a chunk at a time
            chunk = rows[start : start + _CHUNK]
            index.add_with_ids(self.store.float_rows(chunk), self.store.ids[chunk])
        self._pq, self.trained_size = index, self._trained_for(n)

    def remove(self, ids: np.ndarray) -> int:
        id_arr = np.unique(check_ids(ids))
        if id_arr.size == 0 or self.store.live == 0:
            return 0
        rows = self.store.rows_of(id_arr)
        found = rows >= 0
        if not found.any():
            return 0
        rows, gone = rows[found], id_arr[found]
        if self._pq is not None:
            self._purge(gone, self.store.float_rows(rows))
        self.store.kill(rows)
        return int(gone.size)

    def _purge(self, gone: np.ndarray, vectors: np.ndarray) -> None:
        """Take ``gone`` out of the coded lists by rewriting the lists that hold them.

        FAISS 1.15's own ``remove_ids`` on these block-packed lists leaves later adds
        unfindable, so each list holding a removed face is emptied and its other faces
        are coded again from the stored vectors (a few thousand at ten million faces).
        The lists are found from the removed vectors' nearest centroids, then, for any
        id not found there, by reading every list's ids.
        """
        index, invlists = self._pq, self._pq.invlists
        _, near = index.quantizer.search(vectors, min(_GUESS_LISTS, index.nlist))
        left = set(gone.tolist())
        for list_no in dict.fromkeys([*np.unique(near).tolist(), *range(index.nlist)]):
            if not left:
                break
            size = invlists.list_size(list_no)
            if size == 0:
                continue
            ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy()
            hit = np.isin(ids, gone)
            if not hit.any():
                continue
            left -= set(ids[hit].tolist())
            keep = ids[~hit]
            invlists.resize(list_no, 0)
            index.ntotal -= size
            if keep.size:
                index.add_with_ids(self.store.float_rows(self.store.rows_of(keep)), keep)

    # --- queries ----------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_search(queries, k, self.dim)
        out_ids, out_scores = empty_results(q.shape[0], k)
        if q.shape[0] == 0 or self.store.live == 0:
            return out_ids, out_scores
        if self._pq is None:
            rows, matrix = self.store.live_matrix()
            every = q @ matrix.T
            for i, scores in enumerate(every):
                self._top(i, rows, scores, k, out_ids, out_scores)
            return out_ids, out_scores
        params = faiss.SearchParametersIVF(nprobe=min(self.nprobe, self._pq.nlist))
        _, found = self._pq.search(q, k * self.k_factor, params=params)
        for i, row in enumerate(found):
            rows = self.store.rows_of(row[row >= 0])
            rows = rows[rows >= 0]
            self._top(i, rows, self.store.float_rows(rows) @ q[i], k, out_ids, out_scores)
        return out_ids, out_scores

    def _top(
        self,
        i: int,
        rows: np.ndarray,
        scores: np.ndarray,
        k: int,
        out_ids: np.ndarray,
        out_scores: np.ndarray,
    ) -> None:
        """Write the ``k`` best of ``rows`` (by ``scores``) into row ``i`` of the results."""
        if scores.size > k:
            best = np.argpartition(-scores, k - 1)[:k]
            rows, scores = rows[best], scores[best]
        top = np.lexsort((self.store.ids[rows], -scores))
        out_ids[i, : top.size] = self.store.ids[rows[top]]
        out_scores[i, : top.size] = scores[top]

    def __len__(self) -> int:
        return self.store.live

    def ids(self) -> np.ndarray:
        return self.store.ids[self.store.live_rows()].copy()

    # --- files ------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        return {
            "m": self.m,
            "nlist": None if self._pq is None else int(self._pq.nlist),
            "nlist_option": self.nlist,
            "nprobe": self.nprobe,
            "k_factor": self.k_factor,
            "refine": self.refine,
            "trained_size": self.trained_size,
            "train_at": self.train_at,
            "regrow": self.regrow,
        }

    def save(self, path: Path) -> None:
        store, rows = self.store, self.store.live_rows()

        def write_vectors(tmp: Path) -> None:
            out = np.lib.format.open_memmap(tmp, "w+", store.dtype, (rows.size, self.dim))
            for start in range(0, rows.size, _CHUNK):
                out[start : start + _CHUNK] = store.vectors[rows[start : start + _CHUNK]]
            out.flush()
            del out

        writers = {"ids.npy": npy_writer(store.ids[rows]), "vectors.npy": write_vectors}
        if self._pq is not None:
            pq = self._pq
            writers["faiss"] = lambda tmp: faiss.write_index(pq, str(tmp))
        save_index(
            path,
            backend=self.backend,
            dim=self.dim,
            count=int(rows.size),
            params=self._params(),
            meta=self.meta,
            writers=writers,
        )

    @classmethod
    def open(
        cls, path: Path, dim: int, *, mmap: bool = True, verify: bool = True
    ) -> FaissIvfPqIndex:
        saved = read_saved(path, backend=cls.backend, dim=dim, verify=verify)
        p, files = saved.params, saved.files
        if not {"ids.npy", "vectors.npy"} <= set(files) or not set(files) <= set(_FILES):
            raise corrupt(saved.path, f"unexpected data files {sorted(files)}")
        try:
            index = cls(
                dim,
                m=int(p["m"]),
                nlist=None if p["nlist_option"] is None else int(p["nlist_option"]),
                nprobe=int(p["nprobe"]),
                k_factor=int(p["k_factor"]),
                refine=str(p["refine"]),
                train_at=int(p["train_at"]),
                regrow=float(p["regrow"]),
                meta=saved.meta,
            )
            index.trained_size = int(p["trained_size"])
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise corrupt(saved.path, f"bad ivf-pq parameters {p!r}: {exc}") from None
        dtype = index.store.dtype
        ids = load_array(files["ids.npy"], np.int64, (saved.count,), "ids")
        vectors = load_array(files["vectors.npy"], dtype, (saved.count, dim), "vectors", mmap=mmap)
        index.store = VectorStore(dim, dtype, ids, vectors)
        if "faiss" in files:
            try:
                pq = faiss.read_index(str(files["faiss"]))
            except (RuntimeError, MemoryError, ValueError) as exc:
                raise corrupt(files["faiss"], f"FAISS cannot read it: {exc}") from None
            if not isinstance(pq, faiss.IndexIVFPQFastScan) or pq.d != dim:
                raise corrupt(files["faiss"], f"holds a {type(pq).__name__}, not the expected")
            if pq.ntotal != saved.count or pq.nlist != p["nlist"] or index.m != pq.pq.M:
                raise corrupt(files["faiss"], "its lists do not match the saved count or shape")
            index._pq = pq
        elif index.trained_size:
            raise corrupt(saved.path, "a trained index without its faiss file")
        return index

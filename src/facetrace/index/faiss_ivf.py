"""Approximate search with FAISS inverted lists (IVF): the backend for millions of faces.

Two phases, one FAISS index type (``IndexIVF*``, ``METRIC_INNER_PRODUCT`` on unit
vectors, so a score is the cosine similarity):

- *Exact*, below ``train_at`` vectors (default 20,000): one inverted list holding raw
  float32 vectors, scanned whole by every search, so results are exact. 20,000 faces
  cost under 1 ms a query on one core, and k-means needs some 40 points per list to be
  worth training: 20,000 points make 512 good lists.
- *Trained*, from ``train_at`` on: k-means coarse centroids (``nlist``, by default about
  ``4 * sqrt(n)`` rounded to a power of two, 256 to 4,096, at least 39 points each),
  trained on at most 64 points per list drawn with a fixed seed, so a build is
  reproducible. Every vector is moved into an ``IndexIVFFlat`` (``codec="flat"``, float32)
  or an ``IndexIVFScalarQuantizer`` (``"fp16"``: half the memory, recall within 0.003 of
  flat; ``"sq8"``: a quarter, but scores off by a few 1e-3 reorder close faces and cap
  recall@10 near 0.95). When the index grows past ``regrow`` (8) times the size it was
  trained at, the next add trains again on all vectors (decoded from the lists).

A search scans the ``nprobe`` lists nearest the query (default 512; ``index.nprobe`` may
be changed at any time). Face embeddings fill their cone evenly, so the ten nearest faces
of a probe are spread over many lists: at a million dlib-like faces (4,096 lists) recall@10
against exact search was 0.90 at nprobe 256, 0.96-0.99 at 512 (depending on the generator)
and 0.99 at 1,024, costing 3, 6 and 12 ms on one core (exact FAISS: 37 ms).

Deletion is immediate: a hash-table direct map (``DirectMap.Hashtable``) finds an id's
list and slot, and the last entry of the list moves into the hole. Upsert is remove then
add. FAISS uses all cores for batch adds and training; a single query runs on the calling
thread (FAISS parallelises over queries, so one query never starts threads).

Memory: a list's arrays are ``std::vector``s, which double when full. Lists are
therefore allocated once at their size plus 1/8 whenever this module builds them (a
training, an open), so an index takes about 1.25x its raw vectors (float32 codec, with
the hash table) and absorbs 1/8 more vectors before lists start to double.

Saved as one ``.faiss`` file (``faiss.write_index``) under the manifest described in
``facetrace.index.base``; params record codec, nlist, nprobe and trained size. Opening
maps the file (``IO_FLAG_MMAP_IFC``): the inverted lists and centroids are read-only
views of it. FAISS aborts or segfaults when such an index is changed, so the first
change copies the lists and centroids into memory (the mapping outlives the file, which
a later save may delete); ``mmap=False`` copies at once. The direct map is rebuilt on
every open (about 0.1 s per million vectors).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import faiss as faiss_module
import numpy as np

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

faiss: Any = faiss_module  # its type stubs lack DirectMap, SWIG's ``this`` and more

CODECS = ("flat", "fp16", "sq8")
_QTYPES = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}
_FILE = "faiss"
DEFAULT_NPROBE = 512  # recall@10 0.99 at 1M dlib-like faces (4,096 lists); see module doc
DEFAULT_TRAIN_AT = 20_000
# 4,096 lists: at 10M faces training takes about a minute (16,384 took some 35 minutes
# here) and recall per millisecond was the same (docs/scale.md).
MIN_NLIST, MAX_NLIST = 256, 4_096
_POINTS_PER_LIST = 64  # k-means sample size per list (FAISS wants at least 39)
_MIN_POINTS_PER_LIST = 39
TRAIN_SEED = 1234
_SQ_RANGE_MARGIN = 0.1
_HEADROOM_DIV = 8  # lists are allocated 1/8 larger than they are, for later adds


def auto_nlist(
    n: int, *, low: int = MIN_NLIST, high: int = MAX_NLIST, per_list: int = _MIN_POINTS_PER_LIST
) -> int:
    """The number of lists for ``n`` vectors: ``4 * sqrt(n)`` as a power of two, within
    [``low``, ``high``], halved until each list would get ``per_list`` vectors."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 1)))
    nlist = min(max(nlist, low), high)
    while nlist > 1 and nlist * per_list > n:
        nlist //= 2
    return nlist


def check_list_options(backend: str, dim: int, **options: float | None) -> None:
    """Refuse a non-positive ``dim`` (ValueError) or list option (ConfigError):
    ``nlist``/``nprobe`` (None: automatic), ``k_factor``, ``train_at``, and ``regrow``
    (above 1), for the backends built on k-means lists."""
    if dim <= 0:
        raise ValueError(f"dim must be positive, not {dim}")
    for name, value in options.items():
        if name == "regrow" and value is not None and value <= 1:
            raise ConfigError(f"{backend} regrow must be above 1, not {value}")
        if name != "regrow" and value is not None and value < 1:
            raise ConfigError(f"{backend} {name} must be positive, not {value}")


def needs_training(
    total: int,
    *,
    trained_size: int,
    train_at: int,
    nlist: int | None,
    regrow: float,
    expect: int = 0,
    planned: int = 0,
) -> bool:
    """Whether ``total`` vectors call for (new) centroids: the first, or regrown.

    ``planned`` lists for ``expect`` vectors (a rebuild, which knows its size) wait for a
    full k-means sample, or for all of them."""
    if trained_size == 0:
        if planned:
            return total >= max(train_at, min(expect, _POINTS_PER_LIST * planned))
        return total >= max(train_at, _MIN_POINTS_PER_LIST * (nlist or 0))  # enough to train
    return nlist is None and total > regrow * trained_size


def training_sample(n: int, nlist: int) -> np.ndarray | None:
    """Sorted positions, among ``n`` vectors, of the fixed-seed k-means sample for
    ``nlist`` lists; None when all ``n`` train."""
    if n <= _POINTS_PER_LIST * nlist:
        return None
    rng = np.random.default_rng(TRAIN_SEED)
    return np.sort(rng.choice(n, _POINTS_PER_LIST * nlist, replace=False))


class TrainsLists:
    """What the backends built on k-means lists share: when to (re)train them, and how
    many lists.

    ``expect`` (a constructor argument, not saved) is how many vectors the caller is about
    to add: a rebuild from the database knows it. The lists are then trained once, for
    that size, instead of at ``train_at`` and again each time the index grows ``regrow``
    times; ``trained_size`` records the size they were chosen for.
    """

    trained_size: int
    train_at: int
    nlist: int | None
    regrow: float
    expect: int = 0

    def _auto_nlist(self, n: int) -> int:
        return auto_nlist(n)

    def _lists_for(self, n: int) -> int:
        """Lists to train on ``n`` vectors: the option, or for ``n`` or ``expect``."""
        return self.nlist or self._auto_nlist(max(n, self.expect))

    def _trained_for(self, n: int) -> int:
        """The ``trained_size`` of lists trained on ``n`` vectors."""
        return max(n, self.expect)

    def _needs_training(self, total: int) -> bool:
        planned = self._auto_nlist(self.expect) if self.expect and not self.nlist else 0
        return needs_training(
            total,
            trained_size=self.trained_size,
            train_at=self.train_at,
            nlist=self.nlist,
            regrow=self.regrow,
            expect=self.expect,
            planned=planned,
        )


class FaissIvfIndex(TrainsLists):
    """Cosine search over FAISS inverted lists: exact while small, IVF once trained."""

    backend: ClassVar[str] = "ivf"

    def __init__(
        self,
        dim: int,
        *,
        codec: str = "flat",
        nlist: int | None = None,
        nprobe: int | None = None,
        train_at: int = DEFAULT_TRAIN_AT,
        regrow: float = 8.0,
        expect: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        check_list_options(
            "ivf",
            dim,
            nlist=nlist,
            nprobe=nprobe,
            train_at=train_at,
            regrow=regrow,
            expect=expect or None,
        )
        if codec not in CODECS:
            raise ConfigError(f"ivf codec must be one of {', '.join(CODECS)}, not {codec!r}")
        self.dim = dim
        self.codec = codec
        self.nlist = nlist  # None: chosen from the size at training
        self.nprobe = nprobe or DEFAULT_NPROBE  # lists a search scans; callers may set it
        self.train_at = train_at
        self.regrow, self.expect = regrow, expect
        self.meta: dict[str, Any] = dict(meta or {})
        self.trained_size = 0  # vectors the centroids were trained for; 0 while exact
        self._index: Any = _exact_index(dim)
        self._mapped = False  # inverted lists and centroids are views of a file

    # --- changes ----------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        id_arr, vec_arr = check_add(ids, vectors, self.dim)
        if id_arr.size == 0:
            return
        index = self._writable()
        if index.ntotal:
            index.remove_ids(faiss.IDSelectorArray(id_arr.size, faiss.swig_ptr(id_arr)))
        total = index.ntotal + id_arr.size
        del index  # a rebuild frees the old lists
        if self._needs_training(total):
            self._rebuild(id_arr, vec_arr)
        else:
            self._index.add_with_ids(vec_arr, id_arr)

    def remove(self, ids: np.ndarray) -> int:
        id_arr = np.unique(check_ids(ids))
        if id_arr.size == 0 or self._index.ntotal == 0:
            return 0
        selector = faiss.IDSelectorArray(id_arr.size, faiss.swig_ptr(id_arr))
        return int(self._writable().remove_ids(selector))

    def _rebuild(self, new_ids: np.ndarray, new_vectors: np.ndarray) -> None:
        """Train centroids on every vector (present and new) and move them all in.

        The old lists are decoded into one array and freed before the new ones fill, so
        memory peaks at about twice the index. Should training fail (or be interrupted),
        every vector is kept, untrained, in one exact list.
        """
        n_old = int(self._index.ntotal)
        n = n_old + new_ids.size
        ids = np.empty(n, dtype=np.int64)
        vectors = np.empty((n, self.dim), dtype=np.float32)
        _decode_into(self._index, ids[:n_old], vectors[:n_old])
        ids[n_old:], vectors[n_old:] = new_ids, new_vectors
        self._index, self.trained_size = _exact_index(self.dim), 0
        try:
            nlist = self._lists_for(n)
            index = _ivf_index(self.dim, nlist, self.codec)
            picked = training_sample(n, nlist)
            sample = vectors if picked is None else vectors[picked]
            index.train(sample)
            del sample
            _add_presized(index, ids, vectors)
        except BaseException:
            self._index.add_with_ids(vectors, ids)
            raise
        self._index, self.trained_size = index, self._trained_for(n)

    def _writable(self) -> Any:
        """The FAISS index, first copied into memory if it is a view of a file."""
        if self._mapped:
            _copy_into_memory(self._index)
            self._mapped = False
        return self._index

    # --- queries ----------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_search(queries, k, self.dim)
        m = q.shape[0]
        out_ids, out_scores = empty_results(m, k)
        index = self._index
        if m == 0 or index.ntotal == 0:
            return out_ids, out_scores
        params = faiss.SearchParametersIVF(nprobe=min(self.nprobe, index.nlist))
        scores, ids = index.search(q, k, params=params)
        found = ids >= 0
        out_ids[found] = ids[found]
        out_scores[found] = scores[found]
        return out_ids, out_scores

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        return _list_ids(self._index)

    # --- files ------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "metric": "ip",
            "nlist": int(self._index.nlist),
            "nlist_option": self.nlist,
            "nprobe": self.nprobe,
            "trained_size": self.trained_size,
            "train_at": self.train_at,
            "regrow": self.regrow,
        }

    def save(self, path: Path) -> None:
        index = self._index

        def write(tmp: Path) -> None:
            faiss.write_index(index, str(tmp))

        save_index(
            path,
            backend=self.backend,
            dim=self.dim,
            count=int(index.ntotal),
            params=self._params(),
            meta=self.meta,
            writers={_FILE: write},
        )

    @classmethod
    def open(cls, path: Path, dim: int, *, mmap: bool = True, verify: bool = True) -> FaissIvfIndex:
        """Load the index saved at ``path`` (which must exist); IndexCorruptError if damaged.

        With ``verify=False`` the SHA-256 check is skipped: faster for a big index, but
        a damaged file may then crash the process instead of raising.
        """
        saved, data = read_single(path, backend=cls.backend, dim=dim, suffix=_FILE, verify=verify)
        p = saved.params
        try:
            index = cls(
                dim,
                codec=str(p["codec"]),
                nlist=None if p["nlist_option"] is None else int(p["nlist_option"]),
                nprobe=int(p["nprobe"]),
                train_at=int(p["train_at"]),
                regrow=float(p["regrow"]),
                meta=saved.meta,
            )
            index.trained_size = int(p["trained_size"])
            nlist = int(p["nlist"])
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise corrupt(saved.path, f"bad ivf parameters {p!r}: {exc}") from None
        try:
            loaded = faiss.read_index(str(data), faiss.IO_FLAG_MMAP_IFC)
        except (RuntimeError, MemoryError, ValueError) as exc:
            raise corrupt(data, f"FAISS cannot read it: {exc}") from None
        _check_loaded(loaded, data, dim=dim, count=saved.count, nlist=nlist, index=index)
        index._index, index._mapped = loaded, True
        if not mmap:
            index._writable()
        return index


# --- FAISS helpers -------------------------------------------------------------------


def _exact_index(dim: int) -> Any:
    """One inverted list of raw vectors: every search scans all of them (exact)."""
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(np.eye(1, dim, dtype=np.float32))
    index = faiss.IndexIVFFlat(quantizer, dim, 1, faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True
    return _own(index, quantizer)


def _ivf_index(dim: int, nlist: int, codec: str) -> Any:
    quantizer = faiss.IndexFlatIP(dim)
    if codec == "flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, _QTYPES[codec], faiss.METRIC_INNER_PRODUCT, False
        )
        # sq8 maps each dimension's trained [min, max] to 256 steps and clips beyond it;
        # widening the range by 10% a side keeps later, unseen vectors from clipping.
        index.sq.rangestat_arg = _SQ_RANGE_MARGIN
    index.cp.seed = TRAIN_SEED
    return _own(index, quantizer)


def _own(index: Any, quantizer: Any) -> Any:
    """Let the C++ index own its quantizer (as a read index does), with a hash direct map."""
    index.own_fields = True
    quantizer.this.disown()
    index.referenced_objects = []
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def _reserve(invlists: Any, list_no: int, size: int) -> None:
    """Allocate an empty list once, for ``size`` entries plus the headroom.

    A list's arrays are ``std::vector``s: an empty one grows to exactly the size asked
    for, and ``resize(0)`` keeps the allocation. Growing a list that is full doubles it.
    """
    invlists.resize(list_no, size + size // _HEADROOM_DIV)
    invlists.resize(list_no, 0)


def _add_presized(index: Any, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Add to an empty index with each list allocated once (see ``_reserve``).

    Adding entries one by one grows lists by doubling, which leaves a third of a
    bulk-built index unused on average.
    """
    _, assign = index.quantizer.search(vectors, 1)
    assign = np.ascontiguousarray(assign[:, 0], dtype=np.int64)
    invlists = index.invlists
    for list_no, size in enumerate(np.bincount(assign, minlength=index.nlist).tolist()):
        if size:
            _reserve(invlists, list_no, size)
    index.add_core(ids.size, faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(assign))


def _copy_into_memory(index: Any) -> None:
    """Replace the file views of a mapped index (lists, centroids) by copies in memory.

    The lists keep their order, so the direct map stays valid. The old quantizer is
    handed to Python to delete, which releases the last reference to the mapping.
    """
    mapped = index.invlists
    lists = faiss.ArrayInvertedLists(index.nlist, mapped.code_size)
    for list_no in range(index.nlist):
        size = mapped.list_size(list_no)
        if size:
            _reserve(lists, list_no, size)
            lists.add_entries(list_no, size, mapped.get_ids(list_no), mapped.get_codes(list_no))
    index.replace_invlists(lists, True)
    lists.this.disown()
    old_quantizer = index.quantizer
    quantizer = faiss.IndexFlatIP(index.d)
    quantizer.add(old_quantizer.reconstruct_n(0, old_quantizer.ntotal))
    index.quantizer = quantizer
    quantizer.this.disown()
    old_quantizer.this.acquire()  # owned by the index until now: Python deletes it


def _list_ids(index: Any) -> np.ndarray:
    """Every id in ``index``'s inverted lists (int64), list by list."""
    invlists = index.invlists
    parts = [np.empty(0, dtype=np.int64)]
    for list_no in range(index.nlist):
        size = invlists.list_size(list_no)
        if size:
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
    return np.concatenate(parts).astype(np.int64, copy=False)


def _decode_into(index: Any, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Fill ``ids`` (n,) and ``vectors`` (n, d) with every entry of ``index``'s lists."""
    invlists, code_size, d = index.invlists, index.invlists.code_size, index.d
    quantized = isinstance(index, faiss.IndexIVFScalarQuantizer)
    start = 0
    for list_no in range(index.nlist):
        size = invlists.list_size(list_no)
        if size == 0:
            continue
        stop = start + size
        ids[start:stop] = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
        codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * code_size)
        codes = codes.reshape(size, code_size)
        vectors[start:stop] = index.sq.decode(codes) if quantized else codes.view(np.float32)
        start = stop
    if start != ids.size or vectors.shape != (start, d):
        raise AssertionError(f"decoded {start} vectors where the index holds {ids.size}")


def _check_loaded(
    loaded: Any, data: Path, *, dim: int, count: int, nlist: int, index: FaissIvfIndex
) -> None:
    """Raise IndexCorruptError unless ``loaded`` is the index the manifest describes."""
    want = faiss.IndexIVFFlat
    if index.trained_size and index.codec != "flat":
        want = faiss.IndexIVFScalarQuantizer
    if type(loaded) is not want:
        raise corrupt(data, f"holds a {type(loaded).__name__}, expected {want.__name__}")
    if loaded.d != dim or loaded.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise corrupt(data, f"holds {loaded.d}-d vectors or another metric")
    if loaded.nlist != nlist or loaded.ntotal != count:
        raise corrupt(
            data,
            f"{loaded.ntotal} vectors in {loaded.nlist} lists where {count} in {nlist} were saved",
        )
    if want is faiss.IndexIVFScalarQuantizer and loaded.sq.qtype != _QTYPES[index.codec]:
        raise corrupt(data, f"its scalar quantizer is not {index.codec}")
    if loaded.direct_map.type != faiss.DirectMap.Hashtable:
        raise corrupt(data, "it lacks the id hash table")
    if loaded.invlists.compute_ntotal() != count:
        raise corrupt(data, "its inverted lists do not hold the saved count")

"""Partitioned 4-bit anisotropic codes, re-ranked exactly, by Google's ScaNN: ``scann``.

``ivf-pq`` spends most of a 10M-face query in FAISS's list scan. ScaNN (``scann`` on
PyPI, no TensorFlow) keeps the same plan, k-means leaves of compressed codes re-ranked on
the stored vectors, with a faster scan: each face is blocks of 2 dimensions (42 for a
dlib face, stored in 84 dimensions as below; 64 for 128), each block one of 16 centres
trained with the anisotropic loss, which keeps the inner products that decide the top of
a list (``score_ah``), and scanned 32 faces at a time with SIMD register lookups. The
best ``k * k_factor`` by code (at least ``rerank``, 1,600) are scored again on the stored
float32 vectors, so the scores returned are exact cosines.

- Below ``train_at`` faces (default 20,000) every search is exact (``ExactIndex``).
- From ``train_at``: ScaNN trains ``nlist`` spherical k-means leaves (unit centres, so
  the leaf a face is stored in is the one its own vector looks in first) and the codes
  on its own sample, and codes every face. Past ``regrow`` times that size, the next
  add trains again (ScaNN's ``rebalance``) with leaves for the new size. An index told
  the size it is built to (``expect``, a rebuild) trains once, for that size, on its
  first ``64 * leaves`` faces.
- A search scores the faces of the ``nprobe`` leaves nearest the query: by default a
  sixteenth of 4,096 leaves (a million faces) and 576 of 16,384 (ten million), for
  recall@10 about 0.99 on face embeddings at both sizes (``leaves ** 0.75`` without
  spill); the finer the leaves, the smaller the share a query needs.
- Each face is also stored in a second leaf (``spill=1``, the default; ScaNN's SOAR):
  the leaf whose centre's error is most nearly orthogonal to the first one's, so a face
  its first leaf scores badly is likely scored well by its second. At the same recall
  a search then looks in fewer leaves: about a fifth less time. The second codes cost
  half a byte a code (21 bytes a face for dlib's, 32 for 128 dimensions).
- ScaNN keeps and scans each face as its coordinates in the subspace the faces fill
  (``facetrace.index.subspace``), fitted when it first trains: 84 of 128 dimensions for
  dlib's faces, at the same scores to about 1e-9. That is a third fewer codes to scan and
  numbers to hold: at 10M, 0.79x the raw vectors instead of 1.18x, and 576 leaves in 3.7
  ms instead of 4.8-5.1. Fewer codes are coarser, so more candidates are re-ranked
  (``rerank``: 1,600 instead of 400 gives recall@10 0.991 there instead of 0.980). A face
  added later that lies further from the subspace is kept whole in an exact index beside
  ScaNN's, searched with it. Vectors that fill every dimension are stored as they are.
- Adds are ScaNN's own (it appends). Removal is immediate but never ScaNN's own delete,
  which in ScaNN 1.4.2 crashes on a spilled face: ``Positions`` (``scann_rows``) marks it dead and
  searches drop it, asking ScaNN for as many more candidates as there are dead faces.
  Once the dead pass a quarter of the live, and in every save, ScaNN's files are
  written without them (``drop_rows``, no training) and, for the index in memory, read
  back. Upsert is remove then add.

Files: ``ids.npy`` (the id of each of ScaNN's datapoints, in its order, none dead),
``basis.npy`` (the subspace, if fitted), ``outside.ids.npy`` and ``outside.vectors.npy``
(faces kept whole, if any) and ScaNN's own files as ``scann.<name>``, under the manifest
of ``facetrace.index.base``.
Opening reads them all (ScaNN does not map files); the manifest's sizes and SHA-256 are
checked first, because a damaged file can crash ScaNN's reader. ScaNN's C++ log lines go to
this module's logger at debug level, not to the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from facetrace.errors import ConfigError
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
from facetrace.index.exact import ExactIndex
from facetrace.index.faiss_ivf import DEFAULT_TRAIN_AT, TrainsLists, check_list_options
from facetrace.index.faiss_ivf import auto_nlist as lists_for
from facetrace.index.scann_rows import Positions, drop_rows
from facetrace.index.subspace import OUTSIDE_TOL, Subspace, merged

log = logging.getLogger(__name__)

BREADTH_POWER = 0.75  # the default nprobe without spill is leaves ** BREADTH_POWER
# With spill, ANCHOR_PROBE of ANCHOR_LEAVES leaves, scaled by (leaves / ANCHOR_LEAVES) **
# SPILL_POWER: 256 of 4,096 (1M faces) and 576 of 16,384 (10M), recall@10 about 0.99.
ANCHOR_LEAVES, ANCHOR_PROBE, SPILL_POWER = 4096, 256, 0.585
DEFAULT_K_FACTOR = 40  # re-rank the best k * 40 by code for a top k...
DEFAULT_RERANK = 1_600  # ...and never fewer than 1,600 (at 10M, 400 lose 0.01 of recall@10)
MIN_NLIST, MAX_NLIST = 64, 16_384
_SAMPLE_PER_LEAF = 64  # k-means sample size per leaf
_MIN_PER_LEAF = 50  # ScaNN's own minimum cluster size
_BLOCK_DIMS = 2  # dimensions per 4-bit code
_ANISOTROPIC_THRESHOLD = 0.2  # ScaNN's recommended value for inner-product search
_ADD_BATCH = 1_000  # ScaNN's upsert batch
_PARALLEL_AT = 16  # queries in one call from which ScaNN's threads are used
_PREFIX = "scann."  # data files holding ScaNN's own files
_BASIS = "basis.npy"  # the subspace's basis (dim x dims), if one was fitted
_OUTSIDE = "outside."  # the files of faces kept whole (an ExactIndex's, renamed)
_OUTSIDE_IDS, _OUTSIDE_VECTORS = f"{_OUTSIDE}ids.npy", f"{_OUTSIDE}vectors.npy"
_SCRATCH = ".scann-save-"  # where a save has ScaNN write, beside the index
_SPILL_LAMBDA = 1.0  # SOAR's weight on a second leaf's orthogonality (ScaNN's default)
_OVERRETRIEVE = 2.0  # candidates ScaNN takes before dropping a face found twice
_COMPACT_SHARE = 4  # leave dead faces out once they pass a quarter of the live ones


def _scann() -> Any:
    from scann.scann_ops.py import scann_ops_pybind

    return scann_ops_pybind


def auto_nlist(n: int) -> int:
    """Leaves for ``n`` faces: ``4 * sqrt(n)`` as a power of two, 64 to 16,384 (the
    FAISS backends' rule with a higher cap: finer leaves, fewer faces scanned)."""
    return lists_for(n, low=MIN_NLIST, high=MAX_NLIST, per_list=_MIN_PER_LEAF)


@contextlib.contextmanager
def _native_log() -> Iterator[None]:
    """Send what ScaNN's C++ writes on stderr to this module's logger (debug)."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines():
                log.debug("scann: %s", line)


def _load(folder: Path) -> Any:
    """A ScaNN searcher from the files ScaNN wrote in ``folder``."""
    assets = (folder / "scann_assets.pbtxt").read_text(encoding="utf-8", errors="replace")
    with _native_log():
        return _scann().scann_pybind.ScannNumpy(str(folder), assets)


class ScannIndex(TrainsLists):
    """Cosine search with ScaNN: exact while small, partitioned 4-bit codes once trained."""

    backend: ClassVar[str] = "scann"

    def __init__(
        self,
        dim: int,
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        k_factor: int = DEFAULT_K_FACTOR,
        train_at: int = DEFAULT_TRAIN_AT,
        regrow: float = 8.0,
        spill: int = 1,
        rerank: int = DEFAULT_RERANK,
        expect: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        check_list_options(
            "scann",
            dim,
            nlist=nlist,
            nprobe=nprobe,
            k_factor=k_factor,
            train_at=train_at,
            regrow=regrow,
            expect=expect or None,
        )
        if dim % _BLOCK_DIMS:
            raise ConfigError(f"scann needs an even dimension, not {dim}")
        if spill not in (0, 1):
            raise ConfigError(f"scann spill must be 1 (SOAR, a second leaf) or 0, not {spill}")
        if isinstance(rerank, bool) or not isinstance(rerank, int) or rerank < 1:
            raise ConfigError(f"scann rerank must be a positive number of faces, not {rerank!r}")
        self.spill, self.rerank = spill, rerank
        self.dim, self.nlist, self.nprobe_option = dim, nlist, nprobe
        self.nprobe = nprobe or 1  # leaves searched; set from the leaves when trained
        self.k_factor, self.train_at, self.regrow = k_factor, train_at, regrow
        self.expect = expect
        self.meta: dict[str, Any] = dict(meta or {})
        self.trained_size = 0
        self.leaves = 0  # of the trained ScaNN searcher
        self.exact: ExactIndex | None = ExactIndex(dim)
        self.positions = Positions()
        self.subspace: Subspace | None = None  # where ScaNN's faces are stored, if fitted
        self.outside: ExactIndex | None = None  # faces too far from it, kept whole
        self._native: Any = None
        self._threaded = False  # whether ScaNN was given every core for batch searches

    # --- training ---------------------------------------------------------------

    def _auto_nlist(self, n: int) -> int:
        return auto_nlist(n)

    def _config(self, n: int) -> tuple[str, int]:
        leaves = self._lists_for(n)
        dims = self.subspace.dims if self.subspace else self.dim
        builder = _scann().builder(np.empty((0, dims), np.float32), 10, "dot_product")
        config = (
            builder.tree(
                num_leaves=leaves,
                num_leaves_to_search=self._breadth(leaves),
                training_sample_size=min(n, _SAMPLE_PER_LEAF * leaves),
                spherical=True,  # unit centres: a face's leaf is the one a query looks in
                **(
                    {"soar_lambda": _SPILL_LAMBDA, "overretrieve_factor": _OVERRETRIEVE}
                    if self.spill
                    else {}
                ),
            )
            .score_ah(_BLOCK_DIMS, anisotropic_quantization_threshold=_ANISOTROPIC_THRESHOLD)
            .reorder(self._pool(10))
            .create_config()
        )
        return str(config), leaves

    def _breadth(self, leaves: int) -> int:
        """Leaves a search looks in: the option, or the default for ``leaves``."""
        if self.spill:
            default = round(ANCHOR_PROBE * (leaves / ANCHOR_LEAVES) ** SPILL_POWER)
        else:
            default = math.ceil(leaves**BREADTH_POWER - 1e-9)
        return max(1, min(self.nprobe_option or default, leaves))

    def _train(self) -> None:
        """Build ScaNN from the exact index's faces, or train the built one again."""
        if self._native is None:
            assert self.exact is not None
            ids, vectors = self.exact.rows()
            n = ids.size
            self.subspace = Subspace.fit(vectors)
            ids, vectors = self._keep_outside(ids, vectors)
            config, leaves = self._config(n)
            with _native_log():
                native = _scann().scann_pybind.ScannNumpy(vectors, config, os.cpu_count() or 1)
            self.positions = Positions(ids.copy())
            self._native, self.exact, self._threaded = native, None, False
        else:
            if self.positions.dead_count:
                self._compact()
            n = self.positions.n
            config, leaves = self._config(n)
            with _native_log():
                self._native.rebalance(config)
        self.trained_size, self.leaves = self._trained_for(n), leaves
        self.nprobe = self._breadth(leaves)

    # --- changes ----------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        id_arr, vec_arr = check_add(ids, vectors, self.dim)
        if id_arr.size == 0:
            return
        if self.exact is not None:
            self.exact.add(id_arr, vec_arr)
            if self._needs_training(len(self.exact)):
                self._train()
            return
        self.remove(id_arr)
        id_arr, vec_arr = self._keep_outside(id_arr, vec_arr)
        if id_arr.size == 0:
            return
        self._use_all_cores()  # ScaNN codes a batch of faces on its threads
        got = np.asarray(self._native.upsert([None] * id_arr.size, vec_arr, _ADD_BATCH))
        start = self.positions.n
        if not np.array_equal(got, np.arange(start, start + id_arr.size)):
            # ScaNN appends; anything else would give faces the wrong ids
            raise RuntimeError("ScaNN placed new faces out of order; rebuild the index")
        self.positions.append(id_arr)
        if self._needs_training(self.positions.live_count):
            self._train()

    def _keep_outside(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The faces for ScaNN, as coordinates in the subspace (if one was fitted); the
        ones too far from it go to the exact index of faces kept whole."""
        if self.subspace is None:
            return ids, vectors
        coords, distance = self.subspace.split(vectors)
        far = distance > OUTSIDE_TOL
        if far.any():
            if self.outside is None:
                self.outside = ExactIndex(self.dim)
            self.outside.add(ids[far], vectors[far])
            log.warning(
                "%d face(s) lie further than %g from the subspace this index was trained "
                "in; %d such faces are searched exactly (facetrace reindex trains it anew)",
                int(far.sum()),
                OUTSIDE_TOL,
                len(self.outside),
            )
            ids, coords = ids[~far], np.ascontiguousarray(coords[~far])
        return ids, coords

    def remove(self, ids: np.ndarray) -> int:
        id_arr = np.unique(check_ids(ids))
        if id_arr.size == 0:
            return 0
        if self.exact is not None:
            return self.exact.remove(id_arr)
        gone = self.outside.remove(id_arr) if self.outside is not None else 0
        at = self.positions.lookup(id_arr)
        at = at[at >= 0]
        self.positions.kill(at)
        if self.positions.dead_count * _COMPACT_SHARE > max(self.positions.live_count, 1):
            self._compact()
        return gone + int(at.size)

    def _compact(self) -> None:
        """Leave the dead faces out of ScaNN: its files, written again without them, are
        read back (no training). The searcher is released first, so memory does not
        double; if the new files cannot be written or read, the old ones are read back."""
        keep = self.positions.live()
        with tempfile.TemporaryDirectory(prefix="facetrace-scann-") as tmp:
            old, new = Path(tmp, "old"), Path(tmp, "new")
            old.mkdir()
            new.mkdir()
            with _native_log():
                self._native.serialize(str(old), True)
            self._native, self._threaded = None, False
            try:
                drop_rows(old, keep, into=new)
                self._native = _load(new)
            except BaseException:
                self._native = _load(old)
                raise
        self.positions = Positions(self.positions.ids[: keep.size][keep].copy())

    # --- queries ----------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.exact is not None:
            return self.exact.search(queries, k)
        q = check_search(queries, k, self.dim)
        out_ids, out_scores = empty_results(q.shape[0], k)
        if q.shape[0] and self.positions.live_count:
            stored = q if self.subspace is None else self.subspace.project(q)
            self._search_scann(stored, k, out_ids, out_scores)
        if q.shape[0] and self.outside is not None and len(self.outside):
            far_ids, far_scores = self.outside.search(q, k)
            return merged((out_ids, far_ids), (out_scores, far_scores))
        return out_ids, out_scores

    def _search_scann(
        self, q: np.ndarray, k: int, out_ids: np.ndarray, out_scores: np.ndarray
    ) -> None:
        """Fill the results with ScaNN's, for queries as ScaNN stores faces."""
        # Dead faces are still in ScaNN: re-rank as many more candidates as there could
        # be dead among them, and again, with more, wherever fewer than ``_pool(k)``
        # of them were live.
        dead, want = self.positions.dead_count, self._pool(k)
        extra, rows = min(dead, want), np.arange(q.shape[0])
        while rows.size:
            short = [
                i
                for i, (at, scores) in zip(rows.tolist(), self._ask(q[rows], k, extra), strict=True)
                if self._fill(i, at, scores, out_ids, out_scores, want + extra) < want
                and extra < dead
            ]
            rows, extra = np.array(short, np.int64), min(dead, 4 * extra)

    def _pool(self, k: int) -> int:
        """Faces re-ranked for a top ``k``: the best ``k * k_factor`` by code, at least
        ``rerank``."""
        return max(k * self.k_factor, self.rerank)

    def _use_all_cores(self) -> None:
        """Give ScaNN a thread per core (one is its default) for batches of queries and
        of added faces; a single query still runs on one."""
        if not self._threaded:
            self._native.set_num_threads(os.cpu_count() or 1)
            self._threaded = True

    def _ask(self, q: np.ndarray, k: int, extra: int) -> list[tuple[Any, Any]]:
        """ScaNN's ``_pool(k) + extra`` best by code for each query, re-ranked; all
        of them when there are dead faces (``extra``), else only the best ``k``."""
        pre, leaves = self._pool(k) + extra, min(self.nprobe, self.leaves)
        final = pre if extra else k
        if q.shape[0] == 1:  # ScaNN's one-query call: some 40 µs less than a batch of one
            return [self._native.search(q[0], final, pre, leaves)]
        parallel = q.shape[0] >= _PARALLEL_AT
        if parallel:
            self._use_all_cores()
        at, scores = self._native.search_batched(q, final, pre, leaves, parallel, _PARALLEL_AT)
        return list(zip(at, scores, strict=True))

    def _fill(
        self, i: int, at: Any, scores: Any, out_ids: np.ndarray, out_scores: np.ndarray, pool: int
    ) -> int:
        """Row ``i`` of the results from ScaNN's positions and scores (best first, NaN
        after the last face found), without dead faces; equal scores are put in id order.
        Returns the live faces among the ``pool`` re-ranked, or ``pool`` when ScaNN
        found fewer than that (asking again would find no more)."""
        scores = np.asarray(scores, np.float32)
        found = ~np.isnan(scores)
        at = np.asarray(at, np.int64)[found]
        live = ~self.positions.dead[at]
        ids, scores = self.positions.ids[at[live]], scores[found][live]
        if ids.size > 1 and (scores[1:] >= scores[:-1]).any():
            order = np.lexsort((ids, -scores))
            ids, scores = ids[order], scores[order]
        k = out_ids.shape[1]
        out_ids[i, : min(k, ids.size)] = ids[:k]
        out_scores[i, : min(k, ids.size)] = scores[:k]
        return pool if at.size < pool else ids.size

    def __len__(self) -> int:
        if self.exact is not None:
            return len(self.exact)
        return self.positions.live_count + (len(self.outside) if self.outside else 0)

    def ids(self) -> np.ndarray:
        if self.exact is not None:
            return self.exact.ids()
        live = self.positions.ids[: self.positions.n][self.positions.live()]
        return live if self.outside is None else np.concatenate([live, self.outside.ids()])

    # --- files ------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        return {
            "nlist": self.nlist,
            "nprobe": self.nprobe_option,
            "k_factor": self.k_factor,
            "train_at": self.train_at,
            "regrow": self.regrow,
            "spill": self.spill,
            "rerank": self.rerank,
            "trained_size": self.trained_size,
            "leaves": self.leaves,
            "subspace": self.subspace.dims if self.subspace else None,
            "outside": len(self.outside) if self.outside else 0,
        }

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}{_SCRATCH}*"):  # a killed save's
            shutil.rmtree(stale, ignore_errors=True)
        if self.exact is not None:
            self._write(path, len(self.exact), self.exact.writers())
            return
        scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}{_SCRATCH}", dir=path.parent))
        try:
            with _native_log():
                self._native.serialize(str(scratch), True)
            live = self.positions.live()
            if self.positions.dead_count:  # the files hold live faces only
                drop_rows(scratch, live)
            ids = self.positions.ids[: self.positions.n][live]
            writers: dict[str, Any] = {"ids.npy": npy_writer(ids), **self._subspace_writers()}
            for name in sorted(os.listdir(scratch)):
                writers[_PREFIX + name] = lambda tmp, src=scratch / name: os.replace(src, tmp)
            self._write(path, ids.size, writers)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _subspace_writers(self) -> dict[str, Any]:
        """The files of the subspace's basis and of the faces kept whole, if any."""
        writers = {} if self.subspace is None else {_BASIS: npy_writer(self.subspace.basis)}
        if self.outside is not None and len(self.outside):
            writers |= {_OUTSIDE + name: w for name, w in self.outside.writers().items()}
        return writers

    def _write(self, path: Path, count: int, writers: dict[str, Any]) -> None:
        save_index(
            path,
            backend=self.backend,
            dim=self.dim,
            count=count,
            params=self._params(),
            meta=self.meta,
            writers=writers,
        )

    def _open_subspace(self, saved: SavedIndex, dims: Any, outside: int) -> None:
        """Read the subspace's basis and the faces kept whole, as the parameters say."""
        names = {_BASIS} if dims is not None else set()
        names |= {_OUTSIDE_IDS, _OUTSIDE_VECTORS} if outside else set()
        if not names <= set(saved.files):
            raise corrupt(saved.path, f"missing {sorted(names - set(saved.files))}")
        if dims is not None:
            basis = load_array(saved.files[_BASIS], np.float32, (self.dim, int(dims)), "basis")
            self.subspace = Subspace(basis)
        if outside:
            self.outside = ExactIndex(self.dim)
            far = load_array(saved.files[_OUTSIDE_IDS], np.int64, (outside,), "ids")
            vectors = saved.files[_OUTSIDE_VECTORS]
            self.outside.add(far, load_array(vectors, np.float32, (outside, self.dim), "vectors"))

    @classmethod
    def open(cls, path: Path, dim: int, *, mmap: bool = True, verify: bool = True) -> ScannIndex:
        saved = read_saved(path, backend=cls.backend, dim=dim, verify=verify)
        p = saved.params
        try:
            index = cls(
                dim,
                nlist=None if p["nlist"] is None else int(p["nlist"]),
                nprobe=None if p["nprobe"] is None else int(p["nprobe"]),
                k_factor=int(p["k_factor"]),
                train_at=int(p["train_at"]),
                regrow=float(p["regrow"]),
                spill=int(p.get("spill", 0)),  # indexes saved before the option: none
                rerank=int(p.get("rerank", 1)),  # saved before it: k * k_factor, as then
                meta=saved.meta,
            )
            index.trained_size, index.leaves = int(p["trained_size"]), int(p["leaves"])
            index.nprobe = index._breadth(index.leaves)
            dims, outside = p.get("subspace"), int(p.get("outside", 0))  # absent before them
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise corrupt(saved.path, f"bad scann parameters {p!r}: {exc}") from None
        if not index.trained_size:
            index.exact = ExactIndex.from_saved(saved, mmap=mmap)
            return index
        own = {s[len(_PREFIX) :]: f for s, f in saved.files.items() if s.startswith(_PREFIX)}
        if "ids.npy" not in saved.files or "scann_assets.pbtxt" not in own:
            raise corrupt(saved.path, f"unexpected data files {sorted(saved.files)}")
        ids = load_array(saved.files["ids.npy"], np.int64, (saved.count,), "ids")
        index._open_subspace(saved, dims, outside)
        with tempfile.TemporaryDirectory(prefix="facetrace-scann-") as tmp:
            for name, data in own.items():
                os.symlink(data.resolve(), Path(tmp) / name)
            try:
                native = _load(Path(tmp))
            except (RuntimeError, ValueError, MemoryError) as exc:
                raise corrupt(saved.path, f"ScaNN cannot read it: {exc}") from None
        if native.size() != saved.count:
            raise corrupt(saved.path, f"ScaNN holds {native.size()} faces, not {saved.count}")
        index._native, index.exact = native, None
        index.positions = Positions(ids)
        return index

"""The vector index interface, and what every backend shares: input checks and files.

Conventions, stated once for every backend:
- An id is a non-negative int64 (a face's row id). ``-1`` is reserved: it pads results.
- The index L2-normalises what it is given. A score is the cosine similarity of two
  faces, in [-1, 1], higher means more alike. Results are sorted by score, descending;
  missing places are padded with id ``-1`` and score ``-inf``.
- ``add`` is an upsert: adding an id that is present replaces its vector. Within one
  call the last row of a repeated id wins.

Files. A saved index is a small JSON *manifest* at ``path`` plus data files beside it
named ``<path.name>.<16 hex digits>.<suffix>``. Data files are written once under a
fresh name and never rewritten; the manifest names them with their size and SHA-256.
``save`` writes the data files (temp name, fsync, rename), then replaces the manifest
with ``os.replace``, which is the commit point, then deletes data files no longer named.
A save killed at any moment therefore leaves the previous index readable. Opening checks
sizes and hashes before a backend parses a byte, so damaged files raise
``IndexCorruptError`` instead of crashing a native library. One writer at a time: the
caller serialises saves of the same ``path``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from facetrace.errors import IndexCorruptError

PAD_ID = -1
MANIFEST_FORMAT = "facetrace-vector-index"
FORMAT_VERSION = 1
REBUILD_HINT = "run `facetrace reindex` to rebuild it from the database"
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024


@runtime_checkable
class VectorIndex(Protocol):
    """A set of (id, unit vector) pairs searchable by cosine similarity."""

    dim: int
    meta: dict[str, Any]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace ``ids`` (n,) with ``vectors`` (n, dim); normalises them."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; return how many of them were present."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (ids int64 (m, k), scores float32 (m, k)), best first, padded."""
        ...

    def __len__(self) -> int:
        """Number of vectors present."""
        ...

    def ids(self) -> np.ndarray:
        """Every id present (int64, any order)."""
        ...

    def save(self, path: Path) -> None:
        """Write the index and ``meta`` atomically to ``path`` and files beside it."""
        ...


# --- input checks -------------------------------------------------------------------


def check_ids(ids: Any) -> np.ndarray:
    """``ids`` as a 1-D int64 array of non-negative ids; ValueError otherwise."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, not shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be integers, not {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64")
    out = arr.astype(np.int64, copy=False)
    if int(out.min()) < 0:
        raise ValueError("ids must be non-negative (-1 pads search results)")
    return out


def unit_rows(vectors: Any, dim: int, what: str = "vectors") -> np.ndarray:
    """``vectors`` (n, dim) as C-contiguous float32 rows of length 1.

    Raises ValueError for a wrong shape, non-finite values or a zero vector.
    """
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), not {arr.shape}")
    if arr.shape[0] == 0:
        return np.empty((0, dim), dtype=np.float32)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{what} must be numbers, not {arr.dtype}")
    arr64 = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr64).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(arr64, axis=1)
    zero = np.flatnonzero(norms <= 1e-12)
    if zero.size:
        raise ValueError(f"{what} row {int(zero[0])} is a zero vector and has no direction")
    return np.ascontiguousarray(arr64 / norms[:, None], dtype=np.float32)


def check_add(ids: Any, vectors: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(ids, unit vectors)`` for ``add``, a repeated id keeping its last row."""
    id_arr = check_ids(ids)
    vec_arr = unit_rows(vectors, dim)
    if id_arr.shape[0] != vec_arr.shape[0]:
        raise ValueError(f"{id_arr.shape[0]} ids but {vec_arr.shape[0]} vectors")
    if id_arr.size > 1:
        # np.unique on the reversed ids finds each id's last occurrence.
        _, first_in_reversed = np.unique(id_arr[::-1], return_index=True)
        if first_in_reversed.size != id_arr.size:
            keep = np.sort(id_arr.size - 1 - first_in_reversed)
            id_arr, vec_arr = id_arr[keep], vec_arr[keep]
    return id_arr, vec_arr


def check_search(queries: Any, k: int, dim: int) -> np.ndarray:
    """Unit query rows (m, dim) for ``search``; a single (dim,) vector becomes m=1."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an integer, not {k!r}")
    if k <= 0:
        raise ValueError(f"k must be positive, not {k}")
    arr = np.asarray(queries)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    return unit_rows(arr, dim, what="queries")


def empty_results(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All-padding results: ids ``-1`` and scores ``-inf``."""
    return (
        np.full((m, k), PAD_ID, dtype=np.int64),
        np.full((m, k), -np.inf, dtype=np.float32),
    )


def npy_writer(array: np.ndarray) -> Callable[[Path], None]:
    """A ``save_index`` writer of ``array`` as a ``.npy`` file (no pickles)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)

    return write


def room_for(need: int, n: int) -> int:
    """Rows to allocate for ``need`` when ``n`` are held: an eighth more than held, so
    appends one batch at a time cost their own size, not the array's (amortised)."""
    return max(need, n + n // 8, 1024)


def grown(arr: np.ndarray, n: int, size: int) -> np.ndarray:
    """A new array of ``size`` rows (same dtype and row shape) holding ``arr``'s first
    ``n``; the rows after them are unset."""
    new = np.empty((size, *arr.shape[1:]), dtype=arr.dtype)
    new[:n] = arr[:n]
    return new


class SortedIds:
    """Ids in increasing order and the row of each: lookup by id for a backend that
    appends rows.

    Face ids arrive in increasing order, so appended ids usually come after all the
    others: they are written in place, into arrays that grow by an eighth, so a batch
    costs its own size, not the index's (a copy of ten million ids took 95 ms an add).
    Any other ids leave it stale, for the owner to ``reset`` on its next lookup.
    """

    def __init__(self) -> None:
        self._ids = np.empty(0, np.int64)
        self._rows = np.empty(0, np.int64)
        self.n = 0
        self.stale = True

    def reset(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Rebuild from ``ids`` in any order and the row of each (sorted into new arrays;
        among equal ids, the earlier keeps its place)."""
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order].astype(np.int64, copy=False)
        self._rows = rows[order].astype(np.int64, copy=False)
        self.n, self.stale = int(ids.size), False

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted ids, their rows); only when not stale."""
        return self._ids[: self.n], self._rows[: self.n]

    def extend(self, ids: np.ndarray, rows: np.ndarray) -> None:
        if self.stale or ids.size == 0:
            return
        if (ids[1:] <= ids[:-1]).any() or (self.n and ids[0] <= self._ids[self.n - 1]):
            self.stale = True
            return
        need = self.n + ids.size
        if need > self._ids.size:
            size = room_for(need, self.n)
            self._ids, self._rows = grown(self._ids, self.n, size), grown(self._rows, self.n, size)
        self._ids[self.n : need], self._rows[self.n : need] = ids, rows
        self.n = need


# --- files --------------------------------------------------------------------------


def corrupt(path: Path, reason: str) -> IndexCorruptError:
    """The error for a damaged index file, with the way out (always one line)."""
    reason = " ".join(reason.split())
    return IndexCorruptError(f"index file is damaged ({reason}); {REBUILD_HINT}", path=path)


def load_array(
    path: Path, dtype: Any, shape: tuple[int, ...], what: str, *, mmap: bool = False
) -> np.ndarray:
    """A saved ``.npy`` of ``dtype`` and ``shape`` (memory-mapped read-only with
    ``mmap``); IndexCorruptError naming ``what`` when it cannot be read or differs."""
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise corrupt(path, f"unreadable {what}: {exc}") from None
    if arr.dtype != np.dtype(dtype) or arr.shape != shape:
        raise corrupt(path, f"{what} are {arr.dtype} {arr.shape}, expected {shape}")
    return arr


def _data_file_pattern(path: Path) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(path.name)}\.[0-9a-f]{{16}}\.[A-Za-z0-9._-]+$")


def index_files(path: Path) -> list[Path]:
    """Every file of the index saved at ``path`` that exists: manifest first, then data.

    Includes leftovers of an interrupted save, so deleting them all removes the index.
    """
    path = Path(path)
    found = [path] if path.is_file() else []
    if path.parent.is_dir():
        pattern = _data_file_pattern(path)
        found += sorted(p for p in path.parent.iterdir() if pattern.match(p.name))
    return found


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        _fsync_file(directory)


def save_index(
    path: Path,
    *,
    backend: str,
    dim: int,
    count: int,
    params: Mapping[str, Any],
    meta: Mapping[str, Any],
    writers: Mapping[str, Callable[[Path], None]],
) -> None:
    """Write an index as data files plus a manifest, atomically (see module docstring).

    ``writers`` maps a file suffix (``"usearch"``, ``"ids.npy"``) to a function that
    writes that file at the path it is given.
    """
    path = Path(path)
    try:
        meta_json = json.loads(json.dumps(dict(meta), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"index meta must be JSON-serialisable: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    written: list[Path] = []
    files: dict[str, dict[str, Any]] = {}
    try:
        for suffix, write in writers.items():
            final = path.with_name(f"{path.name}.{token}.{suffix}")
            tmp = final.with_name(final.name + ".tmp")
            written.append(tmp)
            write(tmp)
            _fsync_file(tmp)
            files[suffix] = {
                "name": final.name,
                "bytes": tmp.stat().st_size,
                "sha256": sha256_file(tmp),
            }
            os.replace(tmp, final)
            written[-1] = final
        manifest = {
            "format": MANIFEST_FORMAT,
            "format_version": FORMAT_VERSION,
            "backend": backend,
            "dim": dim,
            "count": count,
            "params": dict(params),
            "files": files,
            "meta": meta_json,
        }
        tmp_manifest = path.with_name(f"{path.name}.{token}.manifest.tmp")
        written.append(tmp_manifest)
        with open(tmp_manifest, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_manifest, path)
    except BaseException:
        for p in written:
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    _fsync_dir(path.parent)
    keep = {f["name"] for f in files.values()}
    for stale in index_files(path)[1:]:
        if stale.name not in keep:
            with contextlib.suppress(OSError):  # e.g. still mapped on Windows
                stale.unlink()


@dataclass(frozen=True)
class SavedIndex:
    """A checked manifest: what was saved and where its verified data files are."""

    path: Path
    dim: int
    count: int
    params: dict[str, Any]
    meta: dict[str, Any]
    files: dict[str, Path]


def read_saved(path: Path, *, backend: str, dim: int, verify: bool = True) -> SavedIndex:
    """Read and check the manifest at ``path`` and the data files it names.

    Raises IndexCorruptError when the manifest is not ours, names another backend or
    dimension, or a data file is missing or differs in size or SHA-256 (``verify``).
    A save by another process may replace the files while we read; that is retried once.
    """
    path = Path(path)
    for attempt in range(2):
        manifest = _read_manifest(path)
        try:
            return _check_saved(path, manifest, backend=backend, dim=dim, verify=verify)
        except FileNotFoundError as exc:
            if attempt == 0 and _read_manifest(path) != manifest:
                continue
            raise corrupt(path, f"data file {Path(str(exc.filename)).name} is missing") from None
    raise AssertionError("unreachable")


def read_single(
    path: Path, *, backend: str, dim: int, suffix: str, verify: bool = True
) -> tuple[SavedIndex, Path]:
    """``read_saved`` for a backend that saves one data file, named by ``suffix``."""
    saved = read_saved(path, backend=backend, dim=dim, verify=verify)
    data = saved.files.get(suffix)
    if data is None or len(saved.files) != 1:
        raise corrupt(saved.path, f"expected one {suffix} file")
    return saved, data


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > _MAX_MANIFEST_BYTES:
            raise corrupt(path, f"{size} bytes is too large for an index manifest")
        raw = path.read_bytes()
    except OSError as exc:
        raise corrupt(path, f"cannot read it: {exc.strerror or exc}") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise corrupt(path, "not a facetrace index manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise corrupt(path, "not a facetrace index manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise corrupt(path, f"unsupported format version {manifest.get('format_version')!r}")
    return manifest


def _check_saved(
    path: Path, manifest: dict[str, Any], *, backend: str, dim: int, verify: bool
) -> SavedIndex:
    saved_backend = manifest.get("backend")
    if saved_backend != backend:
        raise corrupt(path, f"it was written by the {saved_backend!r} backend, not {backend!r}")
    saved_dim, count = manifest.get("dim"), manifest.get("count")
    if saved_dim != dim:
        raise corrupt(path, f"it holds {saved_dim}-d vectors but {dim}-d are expected")
    if not isinstance(count, int) or count < 0:
        raise corrupt(path, f"bad vector count {count!r}")
    params, meta, files = manifest.get("params"), manifest.get("meta"), manifest.get("files")
    if not isinstance(params, dict) or not isinstance(meta, dict) or not isinstance(files, dict):
        raise corrupt(path, "manifest lacks params, meta or files")
    pattern = _data_file_pattern(path)
    found: dict[str, Path] = {}
    for suffix, entry in files.items():
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not pattern.match(name):
            raise corrupt(path, f"bad entry for its {suffix} file")
        data = path.with_name(name)
        size = data.stat().st_size  # FileNotFoundError is handled by read_saved
        if size != entry.get("bytes"):
            raise corrupt(data, f"{size} bytes where {entry.get('bytes')} were saved")
        if verify and sha256_file(data) != entry.get("sha256"):
            raise corrupt(data, "its SHA-256 differs from the one saved")
        found[suffix] = data
    return SavedIndex(path=path, dim=dim, count=count, params=params, meta=meta, files=found)

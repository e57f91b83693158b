"""Vector search in Milvus: a server or cluster by URI, or Milvus Lite embedded in a ``.db``.

Milvus holds the vectors. A saved index is a manifest plus one small JSON data file
(``.milvus.json``) naming where they are: URI (never a token), collection, gallery key.
The database stays the truth that ``facetrace reindex`` rebuilds Milvus from. Operators'
view, schema and measurements: docs/milvus.md.

Schema. One collection per model (``facetrace_<model>``) holds every gallery of it:
``pk`` VARCHAR primary key "<gallery key>:<face id>" (unique across the collection),
``face`` INT64 (the VectorIndex id), ``gallery`` VARCHAR partition key, ``vector``
FLOAT_VECTOR(dim) with metric COSINE. Every search, count and listing filters on
``gallery``, so indexes sharing a collection never see each other's vectors.

Keys. Each new ``MilvusIndex`` gets a fresh gallery key ("<label>-<12 hex digits>"), so
it starts empty and a rebuild never meets the rows it replaces. ``open`` attaches to the
key its manifest names. When ``save`` replaces a manifest naming another key of the same
collection, it deletes that key's rows after the commit (as file backends delete data
files no longer named); if that fails they are orphans, found by key. A key belongs to
one path. ``drop()`` deletes an index's rows.

Consistency. Every request asks for Strong consistency: a change is seen by the next
read from any client. Milvus Lite searched unflushed rows about 15 times slower (1.8 s
against 0.115 s a query at 100k), so after a change the next read or save flushes a Lite
collection. A server is never flushed: it seals segments itself and rate-limits manual
flushes. Milvus Lite counts a gallery by reading its rows (2.4 s at 100k), so a Lite
connection remembers counts and moves them with each change (an add first asks which ids
are present): exact, since a Lite database serves one process, which has one client for
it. One writer per gallery at a time.

Milvus Lite 3.2.2 can replay already-flushed rows when killed during a flush (3 in 25
kills during saves left the last batch twice). Searches and ``ids()`` drop repeated ids;
``len()`` counts the copies, so facetrace's gallery check disagrees with the database
and rebuilds the gallery.

One client per (URI, token) per process, closed at exit. A search asks for at most
16,384 results (Milvus's top-k limit); further places are padded. Errors: no URI is a
``ConfigError``; an unreachable or failing server an ``IndexError_`` naming the URI; a
damaged file, or a collection or Lite database that is gone or of another dimension, an
``IndexCorruptError`` (reindex).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from facetrace.errors import ConfigError, IndexCorruptError, IndexError_
from facetrace.index.base import (
    REBUILD_HINT,
    check_add,
    check_ids,
    check_search,
    corrupt,
    empty_results,
    read_saved,
    save_index,
)

ENV_URI = "FACETRACE_MILVUS_URI"
ENV_TOKEN = "FACETRACE_MILVUS_TOKEN"
MAX_TOPK = 16384  # Milvus refuses larger limits (and offset + limit in queries)
INDEX_TYPES = ("FLAT", "HNSW", "AUTOINDEX")
_FILE = "milvus.json"
_LOCATION_FORMAT = "facetrace-milvus-location"
_ADD_BATCH = 4096  # rows per upsert request (about 2.5 MB at 128-d)
_ID_BATCH = 1000  # primary keys per get/delete request
_QUERY_BATCH = 1024  # query vectors per search request
_RPC_TIMEOUT = 300.0
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")
_STRONG = "Strong"
_STRONG_RPC: dict[str, Any] = {"consistency_level": _STRONG, "timeout": _RPC_TIMEOUT}


# --- configuration ------------------------------------------------------------------


def resolve_uri(uri: str | None) -> str:
    """``uri`` (or ``$FACETRACE_MILVUS_URI``) as a Lite ``.db`` path or an http(s) URL.

    ``milvus://host:port`` means ``http://host:port``. Credentials in the URI are refused
    (they would end up in manifests and logs); the token comes from ``token=`` or
    ``$FACETRACE_MILVUS_TOKEN``.
    """
    uri = (uri if uri is not None else os.environ.get(ENV_URI, "")).strip()
    if not uri:
        raise ConfigError(
            f"the milvus index backend needs a Milvus URI: set {ENV_URI} to a Milvus Lite "
            "file (path/faces.db) or a server (http://host:19530)"
        )
    if uri.startswith("milvus://"):
        uri = "http://" + uri.removeprefix("milvus://")
    scheme = urlsplit(uri).scheme.lower()
    uri = scheme + uri[len(scheme) :] if scheme else uri
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                f"Milvus URI {_redact(uri)} holds credentials; put the token in {ENV_TOKEN} instead"
            )
        if not parts.hostname:
            raise ConfigError(f"Milvus URI {uri} names no host")
        return uri.rstrip("/")
    if "://" in uri or not uri.endswith(".db"):
        raise ConfigError(
            f"Milvus URI {_redact(uri)} is neither a Milvus Lite file ending in .db nor "
            "http(s)://host:port or milvus://host:port"
        )
    return os.path.abspath(os.path.expanduser(uri))


def _redact(uri: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", uri)


def _is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://"))


def collection_name(model: str) -> str:
    """The collection that holds the vectors of ``model``."""
    return "facetrace_" + re.sub(r"[^A-Za-z0-9_]+", "_", model).strip("_")


def _label(gallery: str | None) -> str:
    label = _LABEL.sub("_", gallery or "").strip("_.-")[:80]
    return label or "index"


# --- connections --------------------------------------------------------------------


class _Connection:
    """One Milvus client, and what it knows about its collections."""

    def __init__(self, uri: str, client: MilvusClient, token: str) -> None:
        self.uri = uri
        self.client = client
        self.lite = _is_lite(uri)
        self.token = token
        self.dims: dict[str, int] = {}  # collections checked and loaded: name -> dim
        self.dirty: set[str] = set()  # Lite collections changed since their last flush
        self.counts: dict[tuple[str, str], int] = {}  # Lite only: (collection, key) -> rows
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Milvus's exceptions as one-line ``IndexError_`` naming the URI."""
        try:
            yield
        except MilvusException as exc:
            message = str(getattr(exc, "message", "") or exc)
            if self.token:
                message = message.replace(self.token, "***")
            message = " ".join(message.split())
            raise IndexError_(f"Milvus at {self.uri}: cannot {action}: {message}") from None

    def describe_dim(self, name: str) -> int | None:
        """The vector dimension of collection ``name``; None when it does not exist."""
        with self.errors(f"read collection {name}"):
            if not self.client.has_collection(name):
                return None
            info = self.client.describe_collection(name)
        for field in info.get("fields", []):
            if field.get("name") == "vector":
                return int(field.get("params", {}).get("dim", -1))
        return -1

    def use(self, name: str, dim: int, create: dict[str, Any] | None) -> None:
        """Check that collection ``name`` holds ``dim``-d vectors, and load it.

        A missing collection is created with the index ``create`` describes, or is an
        ``IndexCorruptError`` (a saved index whose vectors are gone) when that is None.
        """
        with self.lock:
            if self.dims.get(name) == dim:
                return
            have = self.describe_dim(name)
            if have is None and create is not None:
                self._create(name, dim, create)
                have = dim
            if have != dim:
                what = "does not exist" if have is None else f"holds {have}-d vectors"
                where = f"Milvus at {self.uri}: collection {name} {what}"
                if create is not None:
                    raise IndexError_(f"{where}, not {dim}-d; use one collection per model")
                raise IndexCorruptError(f"{where}, not {dim}-d; {REBUILD_HINT}")
            self._load(name)
            self.dims[name] = dim

    def _create(self, name: str, dim: int, params: dict[str, Any]) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("face", DataType.INT64)
        schema.add_field("gallery", DataType.VARCHAR, max_length=96, is_partition_key=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index_params = MilvusClient.prepare_index_params()
        build = {k: v for k, v in params.items() if k in ("M", "efConstruction")}
        kind = params["index_type"]
        index_params.add_index("vector", index_type=kind, metric_type="COSINE", params=build)
        with self.errors(f"create collection {name}"):
            self.client.create_collection(
                name,
                schema=schema,
                index_params=index_params,
                **_STRONG_RPC,
            )

    def _load(self, name: str) -> None:
        with self.errors(f"load collection {name}"):
            state = self.client.get_load_state(name).get("state")
            if getattr(state, "name", str(state)) != "Loaded":
                self.client.load_collection(name, timeout=_RPC_TIMEOUT)

    @contextlib.contextmanager
    def changing(self, name: str, key: str, delta: int | None = None) -> Iterator[None]:
        """Around a change to gallery ``key`` of ``name``: mark it dirty, and move its
        remembered count by ``delta`` rows when the change succeeds (forget it if None)."""
        count = self.counts.pop((name, key), None)
        done = False
        try:
            if self.lite:
                self.dirty.add(name)
            yield
            done = True
        finally:
            self.counts.pop((name, key), None)
            if done and count is not None and delta is not None:
                self.counts[(name, key)] = count + delta

    def settle(self, name: str) -> None:
        """Flush a Lite collection changed since its last flush (see module docstring)."""
        if name in self.dirty:
            with self.errors(f"flush collection {name}"):
                self.client.flush(name, timeout=_RPC_TIMEOUT)
            self.dirty.discard(name)


_connections: dict[tuple[str, str], _Connection] = {}
_connections_lock = threading.Lock()


def _close_all() -> None:
    with _connections_lock:
        conns = list(_connections.values())
        _connections.clear()
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.client.close()


def _connect(uri: str, token: str, timeout: float) -> _Connection:
    """This process's client for ``uri`` and ``token``, connecting on first use.

    Milvus Lite has no users: its token is ignored, so a ``.db`` has one client.
    """
    if _is_lite(uri):
        token = ""
    key = (uri, token)
    with _connections_lock:
        conn = _connections.get(key)
        if conn is not None:
            return conn
        if _is_lite(uri):
            _check_lite_free(uri)
        try:
            client = MilvusClient(uri=uri, token=token, timeout=timeout)
        except MilvusException as exc:
            message = " ".join(str(getattr(exc, "message", "") or exc).split())
            if token:
                message = message.replace(token, "***")
            raise IndexError_(f"cannot connect to Milvus at {uri}: {message}") from None
        if not _connections:
            atexit.register(_close_all)  # after Milvus Lite's own hook, so it runs first
        conn = _Connection(uri, client, token)
        _connections[key] = conn
        return conn


def _check_lite_free(uri: str) -> None:
    """A clear error when another process has the Milvus Lite database ``uri`` open."""
    lock_path = Path(uri) / "LOCK"
    if not lock_path.is_file():
        return
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        raise IndexError_(
            f"Milvus Lite database {uri} is open in another process; Milvus Lite serves one "
            "process at a time (use a Milvus server to share an index)"
        ) from None
    finally:
        os.close(fd)


# --- the index ----------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where an index's vectors are: what the ``.milvus.json`` file records."""

    uri: str
    collection: str
    gallery: str

    def to_json(self) -> dict[str, Any]:
        return {"format": _LOCATION_FORMAT, **dataclasses.asdict(self)}


class MilvusIndex:
    """Cosine search over one gallery's vectors in a Milvus collection."""

    backend: ClassVar[str] = "milvus"

    def __init__(
        self,
        dim: int,
        *,
        uri: str | None = None,
        token: str | None = None,
        model: str = "faces",
        collection: str | None = None,
        gallery: str | None = None,
        index_type: str | None = None,
        hnsw_m: int = 16,
        ef_construction: int = 128,
        ef_search: int = 256,
        timeout: float = 10.0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """A new, empty index under a fresh gallery key (see the module docstring).

        ``uri``: a Milvus Lite file ``path.db`` or ``http(s)://host:port`` (default
        ``$FACETRACE_MILVUS_URI``); ``token``: ``user:password`` or an API key (default
        ``$FACETRACE_MILVUS_TOKEN``). ``index_type`` applies when the collection is
        created: FLAT (exact, the Lite default), HNSW (the server default) or AUTOINDEX.
        ``timeout``: seconds to wait for the connection.
        """
        if dim <= 0:
            raise ValueError(f"dim must be positive, not {dim}")
        uri = resolve_uri(uri)
        name = collection or collection_name(model)
        if not _NAME.match(name):
            raise ConfigError(f"bad Milvus collection name {name!r}: use letters, digits, _")
        kind = (index_type or ("FLAT" if _is_lite(uri) else "HNSW")).upper()
        if kind not in INDEX_TYPES:
            raise ConfigError(f"Milvus index_type must be one of {', '.join(INDEX_TYPES)}")
        self.dim = dim
        self.meta: dict[str, Any] = dict(meta or {})
        self.params: dict[str, Any] = {"metric": "COSINE", "index_type": kind}
        if kind == "HNSW":
            self.params.update(M=hnsw_m, efConstruction=ef_construction, ef=ef_search)
        key = f"{_label(gallery)}-{secrets.token_hex(6)}"
        if _is_lite(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        token = token if token is not None else os.environ.get(ENV_TOKEN, "")
        self._bind(Location(uri, name, key), _connect(uri, token, timeout))
        self._conn.use(name, dim, create=self.params)

    def _bind(self, location: Location, conn: _Connection) -> None:
        self.location = location
        self._conn = conn
        self._client = conn.client
        self._filter = f'gallery == "{location.gallery}"'

    def _pk(self, face_id: int) -> str:
        return f"{self.location.gallery}:{face_id}"

    def _read(self) -> None:
        self._conn.settle(self.location.collection)

    # --- changes ----------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        id_arr, vec_arr = check_add(ids, vectors, self.dim)
        if id_arr.size == 0:
            return
        name, key = self.location.collection, self.location.gallery
        with self._conn.errors(f"add vectors to {name}"):
            for start in range(0, id_arr.size, _ADD_BATCH):
                stop = start + _ADD_BATCH
                rows = [
                    {"pk": self._pk(i), "face": i, "gallery": key, "vector": v}
                    for i, v in zip(id_arr[start:stop].tolist(), vec_arr[start:stop], strict=True)
                ]
                delta = None
                if (name, key) in self._conn.counts:  # keep a remembered count exact
                    delta = len(rows) - len(self._present([row["pk"] for row in rows]))
                with self._conn.changing(name, key, delta):
                    self._client.upsert(name, rows, timeout=_RPC_TIMEOUT)

    def _present(self, pks: list[str]) -> list[str]:
        """Those of ``pks`` that are in the collection."""
        present: list[str] = []
        for start in range(0, len(pks), _ID_BATCH):
            found = self._client.get(
                self.location.collection,
                ids=pks[start : start + _ID_BATCH],
                output_fields=["pk"],
                **_STRONG_RPC,
            )
            present += [str(row["pk"]) for row in found]
        return present

    def remove(self, ids: np.ndarray) -> int:
        id_arr = np.unique(check_ids(ids))
        name = self.location.collection
        with self._conn.errors(f"remove vectors from {name}"):
            present = self._present([self._pk(i) for i in id_arr.tolist()])
            for start in range(0, len(present), _ID_BATCH):
                batch = present[start : start + _ID_BATCH]
                with self._conn.changing(name, self.location.gallery, -len(batch)):
                    self._client.delete(name, ids=batch, timeout=_RPC_TIMEOUT)
        return len(present)

    def drop(self) -> None:
        """Delete every vector of this index from Milvus (the index stays usable, empty)."""
        name = self.location.collection
        key = self.location.gallery
        with (
            self._conn.errors(f"delete gallery {key} from {name}"),
            self._conn.changing(name, key),
        ):
            self._client.delete(name, filter=self._filter, timeout=_RPC_TIMEOUT)

    # --- queries ----------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_search(queries, k, self.dim)
        m = q.shape[0]
        out_ids, out_scores = empty_results(m, k)
        limit = min(int(k), MAX_TOPK)
        self._read()
        for start in range(0, m, _QUERY_BATCH):
            for row, best in enumerate(self._search(q[start : start + _QUERY_BATCH], limit)):
                n = min(len(best), limit)
                if n:
                    out_ids[start + row, :n] = list(best)[:n]
                    scores = list(best.values())[:n]
                    out_scores[start + row, :n] = np.clip(scores, -1.0, 1.0)
        order = np.argsort(-out_scores, axis=1, kind="stable")
        return (
            np.take_along_axis(out_ids, order, axis=1),
            np.take_along_axis(out_scores, order, axis=1),
        )

    def _search(self, queries: np.ndarray, limit: int) -> list[dict[int, float]]:
        """Each query's hits as {face: score}, best first, repeated ids dropped.

        A row that lost places to repeated ids (see "Milvus Lite crashes") is fetched
        again with twice the limit, up to Milvus's maximum.
        """
        name = self.location.collection
        fetch = limit
        while True:
            params: dict[str, Any] = {"metric_type": "COSINE"}
            if "ef" in self.params:
                params["params"] = {"ef": max(int(self.params["ef"]), fetch)}
            with self._conn.errors(f"search {name}"):
                found = self._client.search(
                    name,
                    data=list(queries),
                    limit=fetch,
                    filter=self._filter,
                    output_fields=["face"],
                    search_params=params,
                    **_STRONG_RPC,
                )
            rows: list[dict[int, float]] = []
            short = False
            for hits in found:
                best: dict[int, float] = {}
                for hit in hits:
                    best.setdefault(int(hit["entity"]["face"]), float(hit["distance"]))
                rows.append(best)
                short = short or (len(best) < limit and len(hits) == fetch)
            if not short or fetch >= MAX_TOPK:
                return rows
            fetch = min(2 * fetch, MAX_TOPK)

    def __len__(self) -> int:
        name, key = self.location.collection, self.location.gallery
        cached = self._conn.counts.get((name, key))
        if cached is not None:
            return cached
        self._read()
        with self._conn.errors(f"count vectors in {name}"):
            rows = self._client.query(
                name,
                filter=self._filter,
                output_fields=["count(*)"],
                **_STRONG_RPC,
            )
        count = int(rows[0]["count(*)"]) if rows else 0
        if self._conn.lite:
            self._conn.counts[(name, key)] = count
        return count

    def ids(self) -> np.ndarray:
        count = len(self)
        if count == 0:
            return np.empty(0, dtype=np.int64)
        name = self.location.collection
        found: list[int] = []
        with self._conn.errors(f"list ids in {name}"):
            if count <= MAX_TOPK:
                rows = self._client.query(
                    name,
                    filter=self._filter,
                    output_fields=["face"],
                    limit=MAX_TOPK,
                    **_STRONG_RPC,
                )
                found = [int(row["face"]) for row in rows]
            else:  # Lite logs a harmless warning about its missing MVCC timestamp here
                it = self._client.query_iterator(
                    name,
                    batch_size=MAX_TOPK // 2,
                    filter=self._filter,
                    output_fields=["face"],
                    **_STRONG_RPC,
                )
                try:
                    while batch := it.next():
                        found += [int(row["face"]) for row in batch]
                finally:
                    it.close()
        return np.unique(np.asarray(found, dtype=np.int64))  # see "Milvus Lite crashes"

    # --- files ------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Record where the vectors are, atomically; Milvus already holds them."""
        path = Path(path)
        previous = _saved_location(path, self.dim)
        location = self.location
        self._read()  # Lite: flush, so that the next process need not replay its log
        count = len(self)

        def write(tmp: Path) -> None:
            tmp.write_text(json.dumps(location.to_json(), indent=1, sort_keys=True) + "\n")

        save_index(
            path,
            backend=self.backend,
            dim=self.dim,
            count=count,
            params=self.params,
            meta=self.meta,
            writers={_FILE: write},
        )
        if (
            previous is not None
            and previous.gallery != location.gallery
            and (previous.uri, previous.collection) == (location.uri, location.collection)
        ):
            # The replaced index's rows are named by no manifest now; an orphan if this fails.
            name, old = location.collection, previous.gallery
            with (
                contextlib.suppress(IndexError_),
                self._conn.errors(f"delete replaced rows from {name}"),
                self._conn.changing(name, old),
            ):
                self._client.delete(name, filter=f'gallery == "{old}"', timeout=_RPC_TIMEOUT)

    @classmethod
    def open(
        cls,
        path: Path,
        dim: int,
        *,
        mmap: bool = True,
        verify: bool = True,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> MilvusIndex:
        """Attach to the vectors the manifest at ``path`` names (``mmap`` has no effect).

        IndexCorruptError when the files are damaged or the collection is gone;
        IndexError_ when Milvus cannot be reached.
        """
        saved = read_saved(path, backend=cls.backend, dim=dim, verify=verify)
        data = saved.files.get(_FILE)
        if data is None or len(saved.files) != 1:
            raise corrupt(saved.path, f"expected one {_FILE} file")
        location = _read_location(data)
        p = saved.params
        kind = p.get("index_type")
        if p.get("metric") != "COSINE" or kind not in INDEX_TYPES:
            raise corrupt(saved.path, f"bad milvus parameters {p!r}")
        if _is_lite(location.uri) and not Path(location.uri).is_dir():
            message = f"Milvus Lite database {location.uri} does not exist; {REBUILD_HINT}"
            raise IndexCorruptError(message, path=saved.path)
        token = token if token is not None else os.environ.get(ENV_TOKEN, "")
        conn = _connect(location.uri, token, timeout)
        conn.use(location.collection, dim, create=None)
        index = cls.__new__(cls)
        index.dim = dim
        index.meta = saved.meta
        index.params = dict(p)
        index._bind(location, conn)
        return index


def _read_location(data: Path) -> Location:
    try:
        raw = json.loads(data.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise corrupt(data, "not a facetrace milvus location file") from None
    fields = ("uri", "collection", "gallery")
    if (
        not isinstance(raw, dict)
        or raw.get("format") != _LOCATION_FORMAT
        or not all(isinstance(raw.get(f), str) for f in fields)
    ):
        raise corrupt(data, "not a facetrace milvus location file")
    try:
        uri = resolve_uri(raw["uri"])
    except ConfigError as exc:
        raise corrupt(data, f"bad Milvus URI: {exc.reason}") from None
    if not _NAME.match(raw["collection"]) or _LABEL.search(raw["gallery"]) or not raw["gallery"]:
        raise corrupt(data, "bad collection or gallery key")
    return Location(uri, raw["collection"], raw["gallery"])


def _saved_location(path: Path, dim: int) -> Location | None:
    """The location the milvus index saved at ``path`` names, if there is a readable one."""
    if not path.is_file():
        return None
    try:
        saved = read_saved(path, backend=MilvusIndex.backend, dim=dim, verify=True)
        data = saved.files.get(_FILE)
        return _read_location(data) if data is not None else None
    except IndexCorruptError:
        return None

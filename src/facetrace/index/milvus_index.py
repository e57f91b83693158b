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

import contextlib
import dataclasses
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from facetrace.errors import ConfigError, IndexCorruptError, IndexError_
from facetrace.index.base import (
    REBUILD_HINT,
    check_add,
    check_ids,
    check_search,
    corrupt,
    empty_results,
    read_saved,
    read_single,
    save_index,
)
from facetrace.index.milvus_client import (
    ADD_BATCH,
    ENV_TOKEN,
    FILE,
    ID_BATCH,
    INDEX_TYPES,
    LABEL,
    LOCATION_FORMAT,
    MAX_TOPK,
    NAME,
    QUERY_BATCH,
    RPC_TIMEOUT,
    STRONG_RPC,
    Connection,
    collection_name,
    connect,
    is_lite,
    label,
    resolve_uri,
)

# --- the index ----------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where an index's vectors are: what the ``.milvus.json`` file records."""

    uri: str
    collection: str
    gallery: str

    def to_json(self) -> dict[str, Any]:
        return {"format": LOCATION_FORMAT, **dataclasses.asdict(self)}


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
        if not NAME.match(name):
            raise ConfigError(f"bad Milvus collection name {name!r}: use letters, digits, _")
        kind = (index_type or ("FLAT" if is_lite(uri) else "HNSW")).upper()
        if kind not in INDEX_TYPES:
            raise ConfigError(f"Milvus index_type must be one of {', '.join(INDEX_TYPES)}")
        self.dim = dim
        self.meta: dict[str, Any] = dict(meta or {})
        self.params: dict[str, Any] = {"metric": "COSINE", "index_type": kind}
        if kind == "HNSW":
            self.params.update(M=hnsw_m, efConstruction=ef_construction, ef=ef_search)
        key = f"{label(gallery)}-{secrets.token_hex(6)}"
        if is_lite(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        token = token if token is not None else os.environ.get(ENV_TOKEN, "")
        self._bind(Location(uri, name, key), connect(uri, token, timeout))
        self._conn.use(name, dim, create=self.params)

    def _bind(self, location: Location, conn: Connection) -> None:
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
            for start in range(0, id_arr.size, ADD_BATCH):
                stop = start + ADD_BATCH
                rows = [
                    {"pk": self._pk(i), "face": i, "gallery": key, "vector": v}
                    for i, v in zip(id_arr[start:stop].tolist(), vec_arr[start:stop], strict=True)
                ]
                delta = None
                if (name, key) in self._conn.counts:  # keep a remembered count exact
                    delta = len(rows) - len(self._present([row["pk"] for row in rows]))
                with self._conn.changing(name, key, delta):
                    self._client.upsert(name, rows, timeout=RPC_TIMEOUT)

    def _present(self, pks: list[str]) -> list[str]:
        """Those of ``pks`` that are in the collection."""
        present: list[str] = []
        for start in range(0, len(pks), ID_BATCH):
            found = self._client.get(
                self.location.collection,
                ids=pks[start : start + ID_BATCH],
                output_fields=["pk"],
                **STRONG_RPC,
            )
            present += [str(row["pk"]) for row in found]
        return present

    def remove(self, ids: np.ndarray) -> int:
        id_arr = np.unique(check_ids(ids))
        name = self.location.collection
        with self._conn.errors(f"remove vectors from {name}"):
            present = self._present([self._pk(i) for i in id_arr.tolist()])
            for start in range(0, len(present), ID_BATCH):
                batch = present[start : start + ID_BATCH]
                with self._conn.changing(name, self.location.gallery, -len(batch)):
                    self._client.delete(name, ids=batch, timeout=RPC_TIMEOUT)
        return len(present)

    def drop(self) -> None:
        """Delete every vector of this index from Milvus (the index stays usable, empty)."""
        name = self.location.collection
        key = self.location.gallery
        with (
            self._conn.errors(f"delete gallery {key} from {name}"),
            self._conn.changing(name, key),
        ):
            self._client.delete(name, filter=self._filter, timeout=RPC_TIMEOUT)

    # --- queries ----------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_search(queries, k, self.dim)
        m = q.shape[0]
        out_ids, out_scores = empty_results(m, k)
        limit = min(int(k), MAX_TOPK)
        self._read()
        for start in range(0, m, QUERY_BATCH):
            for row, best in enumerate(self._search(q[start : start + QUERY_BATCH], limit)):
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
                    **STRONG_RPC,
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
                **STRONG_RPC,
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
                    **STRONG_RPC,
                )
                found = [int(row["face"]) for row in rows]
            else:  # Lite logs a harmless warning about its missing MVCC timestamp here
                it = self._client.query_iterator(
                    name,
                    batch_size=MAX_TOPK // 2,
                    filter=self._filter,
                    output_fields=["face"],
                    **STRONG_RPC,
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
            writers={FILE: write},
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
                self._client.delete(name, filter=f'gallery == "{old}"', timeout=RPC_TIMEOUT)

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
        saved, data = read_single(path, backend=cls.backend, dim=dim, suffix=FILE, verify=verify)
        location = _read_location(data)
        p = saved.params
        kind = p.get("index_type")
        if p.get("metric") != "COSINE" or kind not in INDEX_TYPES:
            raise corrupt(saved.path, f"bad milvus parameters {p!r}")
        if is_lite(location.uri) and not Path(location.uri).is_dir():
            message = f"Milvus Lite database {location.uri} does not exist; {REBUILD_HINT}"
            raise IndexCorruptError(message, path=saved.path)
        token = token if token is not None else os.environ.get(ENV_TOKEN, "")
        conn = connect(location.uri, token, timeout)
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
        or raw.get("format") != LOCATION_FORMAT
        or not all(isinstance(raw.get(f), str) for f in fields)
    ):
        raise corrupt(data, "not a facetrace milvus location file")
    try:
        uri = resolve_uri(raw["uri"])
    except ConfigError as exc:
        raise corrupt(data, f"bad Milvus URI: {exc.reason}") from None
    if not NAME.match(raw["collection"]) or LABEL.search(raw["gallery"]) or not raw["gallery"]:
        raise corrupt(data, "bad collection or gallery key")
    return Location(uri, raw["collection"], raw["gallery"])


def _saved_location(path: Path, dim: int) -> Location | None:
    """The location the milvus index saved at ``path`` names, if there is a readable one."""
    if not path.is_file():
        return None
    try:
        saved = read_saved(path, backend=MilvusIndex.backend, dim=dim, verify=True)
        data = saved.files.get(FILE)
        return _read_location(data) if data is not None else None
    except IndexCorruptError:
        return None

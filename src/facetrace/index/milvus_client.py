"""The Milvus side of the Milvus backend: URIs, one client per server or Milvus Lite
file per process, collections and their consistency (see ``milvus_index``)."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from facetrace.errors import ConfigError, IndexCorruptError, IndexError_
from facetrace.index.base import (
    REBUILD_HINT,
)

ENV_URI = "FACETRACE_MILVUS_URI"
ENV_TOKEN = "FACETRACE_MILVUS_TOKEN"
MAX_TOPK = 16384  # Milvus refuses larger limits (and offset + limit in queries)
INDEX_TYPES = ("FLAT", "HNSW", "AUTOINDEX")
FILE = "milvus.json"
LOCATION_FORMAT = "facetrace-milvus-location"
ADD_BATCH = 4096  # rows per upsert request (about 2.5 MB at 128-d)
ID_BATCH = 1000  # primary keys per get/delete request
QUERY_BATCH = 1024  # query vectors per search request
RPC_TIMEOUT = 300.0
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
LABEL = re.compile(r"[^A-Za-z0-9_.-]+")
_STRONG = "Strong"
STRONG_RPC: dict[str, Any] = {"consistency_level": _STRONG, "timeout": RPC_TIMEOUT}


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


def is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://"))


def collection_name(model: str) -> str:
    """The collection that holds the vectors of ``model``."""
    return "facetrace_" + re.sub(r"[^A-Za-z0-9_]+", "_", model).strip("_")


def label(gallery: str | None) -> str:
    label = LABEL.sub("_", gallery or "").strip("_.-")[:80]
    return label or "index"


# --- connections --------------------------------------------------------------------


class Connection:
    """One Milvus client, and what it knows about its collections."""

    def __init__(self, uri: str, client: MilvusClient, token: str) -> None:
        self.uri = uri
        self.client = client
        self.lite = is_lite(uri)
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
                **STRONG_RPC,
            )

    def _load(self, name: str) -> None:
        with self.errors(f"load collection {name}"):
            state = self.client.get_load_state(name).get("state")
            if getattr(state, "name", str(state)) != "Loaded":
                self.client.load_collection(name, timeout=RPC_TIMEOUT)

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
                self.client.flush(name, timeout=RPC_TIMEOUT)
            self.dirty.discard(name)


_connections: dict[tuple[str, str], Connection] = {}
_connections_lock = threading.Lock()


def _close_all() -> None:
    with _connections_lock:
        conns = list(_connections.values())
        _connections.clear()
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.client.close()


def connect(uri: str, token: str, timeout: float) -> Connection:
    """This process's client for ``uri`` and ``token``, connecting on first use.

    Milvus Lite has no users: its token is ignored, so a ``.db`` has one client.
    """
    if is_lite(uri):
        token = ""
    key = (uri, token)
    with _connections_lock:
        conn = _connections.get(key)
        if conn is not None:
            return conn
        if is_lite(uri):
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
        conn = Connection(uri, client, token)
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

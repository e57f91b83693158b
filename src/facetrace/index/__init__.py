"""The vector index stage: find the stored faces most like a probe.

Public surface (pinned by ``tests/test_index_contract.py``):

- ``VectorIndex``: the Protocol every backend implements (see ``facetrace.index.base``
  for the conventions: non-negative int64 ids, cosine scores, ``-1``/``-inf`` padding,
  upsert, atomic saves).
- ``BACKENDS``: ``"usearch"`` (HNSW, approximate), ``"exact"`` (NumPy), ``"ivf"`` (FAISS
  inverted lists, approximate, built for millions of faces), ``"ivf-pq"`` (the same lists
  holding 4-bit product codes, re-ranked exactly on stored vectors), ``"scann"`` (Google
  ScaNN's leaves of 4-bit anisotropic codes, re-ranked exactly) and ``"milvus"`` (a Milvus
  server or Milvus Lite, for deployments past one machine). Backends that need an optional
  library are imported on first use.
- ``create_index(backend, dim, expect=0)``: a new empty index; ``expect`` faces about to
  be added size the backends trained on k-means lists.
- ``open_index(backend, path, dim)``: the index saved at ``path``, or a new empty one
  when nothing is there; ``IndexCorruptError`` when the files are damaged or were made
  by another backend or for another dimension.
- ``index_files(path)``: every file of the index saved at ``path``, for deletion.

Unknown backends raise ``ConfigError``. Which backend to choose, and why, is in
``docs/index-backends.md``.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from facetrace.errors import ConfigError
from facetrace.index.base import VectorIndex, index_files
from facetrace.index.exact import ExactIndex
from facetrace.index.usearch_index import UsearchIndex

# name -> "module:class"; each class has ``__init__(dim, **options)`` and
# ``open(path, dim, *, mmap, verify)``.
_CLASSES = {
    "usearch": "facetrace.index.usearch_index:UsearchIndex",
    "exact": "facetrace.index.exact:ExactIndex",
    "ivf": "facetrace.index.faiss_ivf:FaissIvfIndex",
    "ivf-pq": "facetrace.index.faiss_ivf_pq:FaissIvfPqIndex",
    "scann": "facetrace.index.scann_index:ScannIndex",
    "milvus": "facetrace.index.milvus_index:MilvusIndex",
}
BACKENDS = tuple(_CLASSES)

__all__ = [
    "BACKENDS",
    "ExactIndex",
    "UsearchIndex",
    "VectorIndex",
    "create_index",
    "index_files",
    "open_index",
]


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _class(backend: str) -> Any:
    _check_backend(backend)
    module, name = _CLASSES[backend].split(":")
    return getattr(importlib.import_module(module), name)


def create_index(backend: str, dim: int, *, expect: int = 0, **options: Any) -> VectorIndex:
    """A new empty index. ``options`` go to the backend (e.g. ``dtype="i8"`` for usearch).
    ``expect``, how many faces are about to be added, goes to the backends that size
    themselves by it (those trained on k-means lists), and to no other."""
    cls = _class(backend)
    if expect and "expect" in inspect.signature(cls).parameters:
        options["expect"] = expect
    index: VectorIndex = cls(dim, **options)
    return index


def open_index(
    backend: str, path: Path, dim: int, *, mmap: bool = True, verify: bool = True
) -> VectorIndex:
    """The index saved at ``path``, or a new empty one when no file is there.

    ``mmap`` maps the data files instead of reading them (the first change copies them
    into memory). ``verify`` checks each data file's SHA-256 before parsing it; turn it
    off only to trade safety against damaged files for opening speed.
    """
    cls = _class(backend)
    path = Path(path)
    if not path.exists():
        return create_index(backend, dim)
    index: VectorIndex = cls.open(path, dim, mmap=mmap, verify=verify)
    return index

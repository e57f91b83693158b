"""Keeps each gallery's vector index in step with the database, which is the truth.

There is one index per (gallery, model), in ``<data>/index/``. Its ``meta`` records the
model, the gallery's ``generation`` when it was saved and the highest face id it holds.
On every open the index is compared with the gallery's tally (``store.tally``: its face
count and highest face id, one row kept in step with every insert and delete, so the check
costs the same at ten faces and at ten million):
- a different generation (faces were deleted since) or model: rebuilt from the database;
- faces newer than ``max_id`` (an ingest was interrupted before its index was saved):
  added from the database, so an interrupted ingest loses nothing;
- still a different number of vectors than the database has faces: rebuilt.
A damaged index file raises ``IndexCorruptError``; ``facetrace reindex`` rebuilds it.
So a search never uses an index that disagrees with the database.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from facetrace import store
from facetrace.db import Gallery
from facetrace.errors import FacetraceError
from facetrace.index import create_index, index_files, open_index
from facetrace.index.base import VectorIndex


class GalleryIndexes:
    """Opens, brings up to date, saves and deletes the indexes of galleries."""

    def __init__(
        self,
        index_dir: Path,
        backend: str,
        dim: int = 128,
        milvus_uri: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.index_dir = index_dir
        self.backend = backend
        self.dim = dim
        self.milvus_uri = milvus_uri
        self.options = dict(options or {})

    def _options(self, gallery: Gallery, model: str) -> dict[str, Any]:
        """What a new index of this gallery needs besides its dimension: the operator's
        options (``FACETRACE_INDEX_OPTIONS``), and for Milvus where it lives."""
        if self.backend == "milvus":  # one collection per model, the gallery as key
            return {"uri": self.milvus_uri, "model": model, "gallery": f"gallery{gallery.id}"}
        return self.options

    def path(self, gallery: Gallery, model: str) -> Path:
        return self.index_dir / f"gallery-{gallery.id}-{model}-{self.backend}.index"

    def load(self, session: Session, gallery: Gallery, model: str) -> VectorIndex:
        """The gallery's index for ``model``, consistent with the database."""
        path = self.path(gallery, model)
        truth = store.tally(session, gallery.id, model)
        if path.exists():
            index = open_index(self.backend, path, self.dim)
        else:  # built from the database: sized for it
            opts = self._options(gallery, model)
            index = create_index(self.backend, self.dim, expect=truth.faces, **opts)
        meta = index.meta
        stale = len(index) > 0 and (
            meta.get("generation") != gallery.generation or meta.get("model") != model
        )
        if stale:
            return self.rebuild(session, gallery, model)
        changed = False
        if truth.max_face_id > int(meta.get("max_id", 0)):
            changed = self._catch_up(session, gallery, model, index)
        if len(index) != truth.faces:
            return self.rebuild(session, gallery, model)
        if changed:
            self.save(gallery, model, index)
        return index

    def _catch_up(self, session: Session, gallery: Gallery, model: str, index: VectorIndex) -> bool:
        after = int(index.meta.get("max_id", 0))
        changed = False
        for ids, vecs in store.iter_vectors(session, gallery.id, model, after_id=after):
            index.add(ids, vecs)
            index.meta["max_id"] = int(ids[-1])
            changed = True
        index.meta.update(model=model, generation=gallery.generation)
        return changed

    def rebuild(self, session: Session, gallery: Gallery, model: str) -> VectorIndex:
        """A fresh index built from every vector of the gallery in the database, sized
        for their number (lists trained once, for the whole gallery)."""
        expect = store.tally(session, gallery.id, model).faces
        opts = self._options(gallery, model)
        index = create_index(self.backend, self.dim, expect=expect, **opts)
        index.meta.update(max_id=0)
        self._catch_up(session, gallery, model, index)
        self.save(gallery, model, index)
        return index

    def add(self, index: VectorIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add freshly stored faces (ids ascending) to an index loaded by ``load``."""
        if len(ids):
            index.add(ids, vectors)
            index.meta["max_id"] = max(int(index.meta.get("max_id", 0)), int(max(ids)))

    def save(self, gallery: Gallery, model: str, index: VectorIndex) -> None:
        """Save under an exclusive lock, so that processes saving the same index (two
        ingests, or a search that caught up) never interleave their files."""
        self.index_dir.mkdir(parents=True, exist_ok=True)
        index.meta.update(model=model, generation=gallery.generation)
        path = self.path(gallery, model)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                index.save(path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def delete(self, gallery: Gallery, model: str) -> None:
        """Delete the gallery's index: its files, and its vectors where a server holds
        them (Milvus). A damaged or unreachable index still loses its files."""
        path = self.path(gallery, model)
        if path.exists() and self.backend == "milvus":
            with contextlib.suppress(FacetraceError):
                open_index(self.backend, path, self.dim).drop()  # type: ignore[attr-defined]
        for f in index_files(path):
            f.unlink(missing_ok=True)

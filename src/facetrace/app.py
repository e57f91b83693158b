"""``Facetrace``: the library's front door, one method per user-facing operation.

The CLI (and later the web service) parse their input, call one method here and render
what it returns. It owns the wiring: settings -> database sessions, gallery indexes and
the face pipeline, each made on first use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import sessionmaker

from facetrace import store
from facetrace.calibration import find_calibration
from facetrace.db import open_database
from facetrace.gallery_index import GalleryIndexes
from facetrace.ingest import Ingester, IngestReport, Progress
from facetrace.pipeline import Analyzer
from facetrace.records import AnalysedImage
from facetrace.search import Comparison, Searcher, SearchResult, compare
from facetrace.settings import Settings, save_data_settings
from facetrace.sources import Item


class Facetrace:
    """Everything a user can do, on the data directory and database of ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def sessions(self) -> sessionmaker:
        maker = open_database(self.settings.db_url)
        # The service's audit chain is keyed by a file beside the data, not in the database.
        maker.configure(info={"audit_key_file": str(self.settings.data_dir / "audit.key")})
        return maker

    @cached_property
    def indexes(self) -> GalleryIndexes:
        s = self.settings
        return GalleryIndexes(
            s.index_dir, s.index_backend, milvus_uri=s.milvus_uri, options=s.index_option_values
        )

    @cached_property
    def analyzer(self) -> Analyzer:
        return Analyzer.from_settings(self.settings)

    def ingest(
        self,
        items: Iterable[Item],
        gallery: str,
        *,
        command: str = "ingest",
        workers: int | None = None,
        on_progress: Progress | None = None,
    ) -> IngestReport:
        ingester = Ingester(self.settings, self.sessions, self.indexes, workers, on_progress)
        return ingester.run(items, gallery, command)

    def search(self, photo: Path, galleries: list[str] | None = None, k: int = 10) -> SearchResult:
        model = self.analyzer.model
        searcher = Searcher(
            self.analyzer,
            self.sessions,
            self.indexes,
            self.settings.probe_rotations,
            find_calibration(self.settings.data_dir, model),
            self.settings.target_fpir,
        )
        return searcher.search(photo, galleries, k)

    def compare(self, a: Path, b: Path) -> Comparison:
        calibration = find_calibration(self.settings.data_dir, self.analyzer.model)
        return compare(
            self.analyzer, a, b, rotations=self.settings.probe_rotations, calibration=calibration
        )

    def faces(self, photo: Path) -> AnalysedImage:
        return self.analyzer.analyse_file(photo, rotations=self.settings.probe_rotations)

    def galleries(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            return store.gallery_stats(s)

    def subjects(self, gallery: str) -> list[dict[str, Any]]:
        with self.sessions() as s:
            return store.subject_stats(s, store.get_gallery(s, gallery))

    def forget(self, gallery: str, subject: str, photos_out: list[str] | None = None) -> int:
        """Remove a subject's faces from the database and the index; returns how many.

        ``photos_out`` receives the stored paths of photos left with no face at all."""
        model = self.analyzer.model
        with self.sessions() as s:
            g = store.get_gallery(s, gallery)
            store.get_subject(s, g, subject)  # a name not there costs no index work
            index = self.indexes.load(s, g, model)
            face_ids = store.forget_subject(s, g, subject, photos_out)
            s.commit()
            index.remove(np.asarray(face_ids, dtype=np.int64))
            self.indexes.save(g, model, index)
        return len(face_ids)

    def reindex(self, gallery: str | None = None) -> dict[str, int]:
        """Rebuild the indexes of one or every gallery from the database, every model's;
        returns the number of faces indexed per gallery."""
        out: dict[str, int] = {}
        with self.sessions() as s:
            chosen = [store.get_gallery(s, gallery)] if gallery else store.all_galleries(s)
            for g in chosen:
                out[g.name] = 0
                for model in sorted(store.gallery_models(s, g.id)):
                    out[g.name] += len(self.indexes.rebuild(s, g, model))
        return out

    def move_index(
        self, backend: str, milvus_uri: str | None = None, options: str = ""
    ) -> dict[str, int]:
        """Rebuild every gallery's indexes in another backend, or the same one with other
        ``options``, make it this data directory's choice (``settings.json``), then delete
        the old indexes.

        Until the last gallery is built the old indexes stay in use, so a move that fails
        half-way changes nothing; run it again. (Rebuilt in the same backend, each
        gallery's index is replaced as it is built.)
        """
        target = Facetrace(
            replace(
                self.settings, index_backend=backend, milvus_uri=milvus_uri, index_options=options
            )
        )
        built = target.reindex()
        save_data_settings(
            self.settings.data_dir,
            index_backend=backend,
            milvus_uri=milvus_uri,
            index_options=options,
        )
        # Index paths are named by backend: another backend leaves old files to delete.
        # (Milvus to another Milvus rebuilds in place; the old server keeps its copy.)
        if backend != self.settings.index_backend:
            with self.sessions() as s:
                for g in store.all_galleries(s):
                    for model in store.gallery_models(s, g.id):
                        self.indexes.delete(g, model)
        return built

"""The ingest stage: photos from folders, manifests and archives into a gallery.

The main process reads each item's bytes, hashes them (SHA-256) and skips bytes the
gallery already holds or that this run has already seen; new photos go to worker
processes, each of which loads the models once and runs the face pipeline. The main
process alone writes: one transaction per photo (the image row and all its faces), then
the vectors go into the gallery's index, which is saved at the end and every
``save_interval`` photos: 500, or a hundredth of the index's faces once that is more (a
save writes the whole index: 45 s at ten million faces). A run killed at any moment
therefore resumes without loss or duplication: stored photos are skipped by hash, photos
in flight were never committed, and vectors committed but not yet saved in the index are
added back from the database when the index is next opened (see
``facetrace.gallery_index``).

Every file that cannot be used is recorded in ``ingest_failure`` with its reason and
listed in the report; the batch always goes on.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from facetrace import store
from facetrace.decode import sha256_hex
from facetrace.errors import FacetraceError
from facetrace.gallery_index import GalleryIndexes
from facetrace.pipeline import Analyzer
from facetrace.records import AnalysedImage
from facetrace.settings import Settings
from facetrace.sources import Item

SAVE_EVERY = 500  # photos between index saves, at the least
SAVE_SHARE = 100  # and at least this share of the index's faces


def save_interval(faces: int) -> int:
    """Photos between index saves for an index of ``faces``: saving costs its whole size,
    and what a killed run did not save is added back from the database on the next open,
    so the interval grows with the index (a save at most every 1% of it)."""
    return max(SAVE_EVERY, faces // SAVE_SHARE)


Progress = Callable[[int, int], None]


@dataclass
class IngestReport:
    """What an ingest run did; ``failures`` holds (file, reason) pairs."""

    gallery: str
    batch_id: int
    workers: int
    images_seen: int = 0
    images_added: int = 0
    already_in_gallery: int = 0
    duplicates_in_run: int = 0
    faces_added: int = 0
    no_face: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failures"] = [{"file": f, "reason": r} for f, r in self.failures]
        d["images_per_second"] = round(self.images_added / self.seconds, 2) if self.seconds else 0
        return d


# -- worker side ------------------------------------------------------------------------

_worker: Analyzer | None = None


def _init_worker(settings: Settings) -> None:
    global _worker
    if multiprocessing.parent_process() is not None:
        # Ctrl-C is the main process's to handle; workers just stop with the pool.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # A main process killed outright (kill -9) cannot stop its pool: leave with it.
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    _worker = Analyzer.from_settings(settings, ingest=True)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _analyse(data: bytes, source: str) -> AnalysedImage | str:
    """Run the pipeline in a worker; a string is the reason the photo failed."""
    assert _worker is not None
    try:
        return _worker.analyse_bytes(data, source)
    except FacetraceError as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - one bad photo must not stop the batch
        return f"unexpected error while analysing ({type(exc).__name__}: {exc})"


# -- main side --------------------------------------------------------------------------


class Ingester:
    """Runs one ingest batch into one gallery."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker,
        indexes: GalleryIndexes,
        workers: int | None = None,
        on_progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.indexes = indexes
        self.workers = workers or settings.workers
        self.on_progress = on_progress or (lambda images, faces: None)
        self.model = Analyzer.from_settings(settings).model

    def run(self, items: Iterable[Item], gallery_name: str, command: str) -> IngestReport:
        started = time.monotonic()
        with self.sessions() as s:
            gallery = store.get_or_create_gallery(s, gallery_name)
            batch = store.start_batch(s, gallery, command)
            s.commit()
            self.known = store.known_hashes(s, gallery.id)
            self.index = self.indexes.load(s, gallery, self.model)
        self.gallery, self.report = gallery, IngestReport(gallery_name, batch.id, self.workers)
        self.seen: set[str] = set()
        self.unsaved, self.save_every = 0, save_interval(len(self.index))
        status = "interrupted"
        try:
            self._run_items(items)
            status = "done"
        finally:
            self.indexes.save(self.gallery, self.model, self.index)
            self.report.seconds = round(time.monotonic() - started, 2)
            with self.sessions.begin() as s:
                counts = self.report.to_dict()
                counts.pop("failures")
                store.finish_batch(s, batch.id, status, counts)
        return self.report

    def _prepare(self, item: Item) -> tuple[bytes, str] | None:
        """The bytes to analyse, or None when the item is skipped or failed."""
        self.report.images_seen += 1
        if item.error is not None:
            self._fail(item.meta.path, item.error)
            return None
        try:
            data = item.read()
        except FacetraceError as exc:
            self._fail(item.meta.path, exc.reason)
            return None
        sha = sha256_hex(data)
        if sha in self.seen:
            self.report.duplicates_in_run += 1
            self._tick()
            return None
        if sha in self.known:
            self.report.already_in_gallery += 1
            self._tick()
            return None
        self.seen.add(sha)
        return data, sha

    def _run_items(self, items: Iterable[Item]) -> None:
        if self.workers <= 1:
            _init_worker(self.settings)
            for item in items:
                prepared = self._prepare(item)
                if prepared is not None:
                    self._store(item, _analyse(prepared[0], item.meta.path))
            return
        self._run_pool(iter(items))

    def _run_pool(self, items: Any) -> None:
        window = self.workers * 4
        ctx = multiprocessing.get_context("spawn")
        exhausted = False
        while not exhausted:
            inflight: dict[Future[AnalysedImage | str], Item] = {}
            pool = ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_init_worker, initargs=(self.settings,)
            )
            try:
                while True:
                    while not exhausted and len(inflight) < window:
                        item = next(items, None)
                        if item is None:
                            exhausted = True
                            break
                        prepared = self._prepare(item)
                        if prepared is not None:
                            inflight[pool.submit(_analyse, prepared[0], item.meta.path)] = item
                    if not inflight:
                        break
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        self._store(inflight.pop(fut), fut.result())
            except BrokenProcessPool:
                for item in inflight.values():
                    self._fail(item.meta.path, "a worker process crashed while analysing it")
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def _fail(self, path: str, reason: str) -> None:
        self.report.failures.append((path, reason))
        with self.sessions.begin() as s:
            store.record_failure(s, self.gallery.id, self.report.batch_id, path, reason)
        self._tick()

    def _store(self, item: Item, result: AnalysedImage | str) -> None:
        if isinstance(result, str):
            self._fail(item.meta.path, result)
            return
        s: Session
        try:
            with self.sessions.begin() as s:
                ids = store.add_image(s, self.gallery.id, self.report.batch_id, result, item.meta)
        except IntegrityError:
            # Another ingest into this gallery stored the same bytes a moment ago.
            self.report.already_in_gallery += 1
            self._tick()
            return
        self.known.add(result.sha256)
        if result.faces:
            vectors = np.stack([f.embedding for f in result.faces])
            self.indexes.add(self.index, np.asarray(ids), vectors)
        else:
            self.report.no_face.append(item.meta.path)
        self.report.images_added += 1
        self.report.faces_added += len(ids)
        self.unsaved += 1
        if self.unsaved >= self.save_every:
            self.indexes.save(self.gallery, self.model, self.index)
            self.unsaved, self.save_every = 0, save_interval(len(self.index))
        self._tick(len(ids))

    def _tick(self, faces: int = 0) -> None:
        self.on_progress(1, faces)

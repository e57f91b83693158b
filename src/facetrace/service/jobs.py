"""Background ingest jobs: an upload (a zip or tar archive of photos, or one photo) into a
gallery, run by one worker thread while the request that submitted it has long returned.

``submit`` checks the caller may write the gallery (creating it, owned by their
organisation, if it is new), streams the upload to ``DATA/uploads/<job id>/<name>`` under
the upload limit, checks it is an archive or an image, and records the job and its audit
entry in one transaction. The worker then runs the ordinary ingest over it, writing
progress (at most twice a second) to the job's row, and finishes with the report or the
error's message, audited as the user who submitted it.

Uploads are kept: they are the gallery's source images, from which face crops are read.
A job left ``queued`` or ``running`` by a server that was killed is queued again when the
next one starts; ingest skips photos already stored (by SHA-256), so the rerun neither
loses nor duplicates anything. ``stop`` interrupts the running job after the photo in hand
and leaves it queued, to resume the same way. One server process per data directory.
"""

from __future__ import annotations

import builtins
import logging
import queue
import re
import secrets
import shutil
import tarfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from facetrace import sources, store
from facetrace.db import Gallery, utcnow
from facetrace.decode import decode_bytes
from facetrace.errors import (
    ConflictError,
    FacetraceError,
    InputError,
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
    UnsupportedMediaError,
)
from facetrace.service import access, audit, uow
from facetrace.service.auth import Principal
from facetrace.service.tables import Job, User

log = logging.getLogger("facetrace.service.jobs")

CHUNK = 1024 * 1024
PROGRESS_EVERY = 0.5  # seconds between progress writes
STOP_WAIT = 60.0  # seconds ``stop`` waits for the photo in hand
UNFINISHED = ("queued", "running")
FINISHED = ("done", "failed")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_TAR_SUFFIX = {b"\x1f\x8b": ".tar.gz", b"BZh": ".tar.bz2", b"\xfd7zXZ\x00": ".tar.xz"}


class _Interrupted(Exception):
    """Raised from the progress callback when the runner is stopping."""


def job_dict(row: Job) -> dict[str, Any]:
    """A job as the API and pages show it."""
    total = row.total
    if row.status == "done":
        percent = 100
    elif total:
        percent = min(100, int(100 * row.done / total))
    else:
        percent = 0
    return {
        "id": row.id,
        "gallery": row.gallery_name,
        "kind": row.kind,
        "filename": Path(row.upload_path).name if row.upload_path else None,
        "status": row.status,
        "done": row.done,
        "total": total,
        "percent": percent,
        "message": row.message,
        "result": row.result,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }


def safe_name(filename: str) -> str:
    """A file name that is safe to write: the basename, odd characters replaced."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_CHARS.sub("_", base).strip("._")[:150]
    return name or "upload"


def upload_kind(path: Path, display: str, max_pixels: int) -> str:
    """The file name suffix the upload needs to be read as what it is (``.zip``,
    ``.tar.gz``, ... or the image's format), or UnsupportedMediaError naming it."""
    with path.open("rb") as fh:
        head = fh.read(512)
    if not head:
        raise UnsupportedMediaError(f"{display}: the file is empty")
    if zipfile.is_zipfile(path):
        return ".zip"
    if _is_tar(path):
        for magic, suffix in _TAR_SUFFIX.items():
            if head.startswith(magic):
                return suffix
        return ".tar"
    try:
        image = decode_bytes(path.read_bytes(), display, max_pixels=max_pixels)
    except InputError as exc:
        raise UnsupportedMediaError(
            f"{display}: not a photo, nor a zip or tar archive of photos ({exc.reason})"
        ) from None
    return "." + image.format.lower()


def _is_tar(path: Path) -> bool:
    try:
        with tarfile.open(path) as tf:
            return tf.next() is not None
    except Exception:  # noqa: BLE001 - whatever tarfile makes of it, it is not a tar
        return False


def _fitting_name(name: str, suffix: str) -> str:
    """``name`` with ``suffix`` when needed, so ``sources.from_path`` reads it right."""
    archive = sources.is_archive(Path(name))
    if suffix in (".zip", ".tar") or suffix.startswith(".tar."):
        return name if archive else name + suffix
    return name + suffix if archive else name


def _message(exc: BaseException) -> str:
    if isinstance(exc, FacetraceError):
        return str(exc)
    return f"unexpected error ({type(exc).__name__}: {exc}); see the server log"


class JobRunner:
    """Queues ingest jobs and runs them, one at a time, in a daemon thread."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker; queue again the jobs a killed server left unfinished."""
        if self._thread is not None and self._thread.is_alive():
            return
        # Each worker has its own queue and stop flag: one that outlived ``stop`` never
        # takes work from its successor.
        self._stopping, self._queue = threading.Event(), queue.Queue()
        with uow.write(self.svc.sessions) as s:
            s.execute(
                update(Job)
                .where(Job.status == "running")
                .values(status="queued", message="interrupted; resumed when the server started")
            )
            pending = s.execute(
                select(Job.id).where(Job.status == "queued").order_by(Job.id)
            ).scalars()
            for job_id in pending:
                self._queue.put(job_id)
        self._thread = threading.Thread(
            target=self._loop,
            args=(self._queue, self._stopping),
            name="facetrace-jobs",
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Stop after the photo in hand; an unfinished job stays queued for the next start."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._queue.put(None)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("the job worker did not stop within %.0f s", timeout)
        self._thread = None

    # -- requests ---------------------------------------------------------------------

    def submit(
        self, who: Principal, gallery: str, filename: str, upload: BinaryIO
    ) -> dict[str, Any]:
        """Store an upload and queue its ingest into ``gallery``; the new job."""
        access.require(who, "gallery.write")
        gallery = (gallery or "").strip()
        if not gallery or len(gallery) > 200 or any(c in gallery for c in "/\\\x00"):
            raise RequestError("gallery name must be 1 to 200 characters, without / or \\")
        with uow.read(self.svc.sessions) as s:
            _writable(s, who, gallery, create=False)  # refuse before reading the upload
        name = safe_name(filename)
        display = Path((filename or "").replace("\\", "/")).name or name
        uploads = self.svc.data_dir / "uploads"
        incoming = uploads / f".incoming-{secrets.token_hex(8)}"
        final: Path | None = None
        try:
            incoming.mkdir(parents=True)
            part = incoming / "upload.part"
            self._receive(upload, part, display)
            suffix = upload_kind(part, display, self.svc.settings.max_pixels)
            name = _fitting_name(name, suffix)
            with uow.write(self.svc.sessions) as s:
                _writable(s, who, gallery, create=True)
                row = Job(
                    org_id=who.org_id,
                    user_id=who.user_id,
                    gallery_name=gallery,
                    kind="ingest",
                    status="queued",
                    upload_path="",
                    done=0,
                )
                s.add(row)
                s.flush()
                final = uploads / str(row.id)
                if final.exists():  # left by a transaction that was rolled back
                    shutil.rmtree(final)
                part.rename(incoming / name)
                incoming.rename(final)
                row.upload_path = str(final / name)
                size = (final / name).stat().st_size
                audit.record(
                    s,
                    who.actor,
                    "ingest.submit",
                    object_type="job",
                    object_id=row.id,
                    detail={"gallery": gallery, "filename": display, "bytes": size},
                )
                result = job_dict(row)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            if final is not None:
                shutil.rmtree(final, ignore_errors=True)
            raise
        self._queue.put(result["id"])
        return result

    def _receive(self, upload: BinaryIO, part: Path, display: str) -> None:
        limit = self.svc.upload_limit
        size = 0
        with part.open("wb") as out:
            while chunk := upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(
                        f"{display}: the upload is over the limit of {limit:,} bytes"
                    )
                out.write(chunk)

    def get(self, who: Principal, job_id: int) -> dict[str, Any]:
        access.require(who, "read")
        with uow.read(self.svc.sessions) as s:
            row = s.get(Job, job_id)
            if row is None or row.org_id != who.org_id:
                raise NotFoundError(f"job {job_id} does not exist")
            return job_dict(row)

    def wait(self, job_id: int, timeout: float = 120.0) -> dict[str, Any]:
        """The job once it is done or failed, or as it is after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with uow.read(self.svc.sessions) as s:
                row = s.get(Job, job_id)
                if row is None:
                    raise NotFoundError(f"job {job_id} does not exist")
                out = job_dict(row)
            if out["status"] in FINISHED or time.monotonic() >= deadline:
                return out
            time.sleep(0.05)

    # -- the worker -------------------------------------------------------------------

    def _loop(self, jobs: queue.Queue[int | None], stopping: threading.Event) -> None:
        while not stopping.is_set():
            job_id = jobs.get()
            if job_id is None or stopping.is_set():
                return
            try:
                self._run(job_id, stopping)
            except Exception:  # noqa: BLE001 - the worker must outlive any one job
                log.exception("job %s: could not be run or recorded", job_id)

    def _claim(self, job_id: int) -> tuple[Job, audit.Actor] | None:
        """Mark a queued job running (once, even if queued twice); None if not queued."""
        with uow.write(self.svc.sessions) as s:
            claimed = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(status="running", done=0, message=None)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            row = s.get(Job, job_id)
            assert row is not None
            user = s.get(User, row.user_id)
            actor = audit.Actor(row.user_id, user.username if user else None, row.org_id)
            return row, actor

    def _run(self, job_id: int, stopping: threading.Event) -> None:
        claimed = self._claim(job_id)
        if claimed is None:
            return
        row, actor = claimed
        settings = self.svc.settings
        path = Path(row.upload_path)
        total = sources.count_items([path], None) if path.exists() else None
        self._update(job_id, total=total)
        done, last = 0, time.monotonic()

        def progress(images: int, _faces: int) -> None:
            nonlocal done, last
            done += images
            if stopping.is_set():
                raise _Interrupted
            if time.monotonic() - last >= PROGRESS_EVERY:
                self._update(job_id, done=done)
                last = time.monotonic()

        try:
            items = sources.from_path(
                path,
                max_file_bytes=settings.max_file_bytes,
                max_archive_bytes=settings.max_archive_bytes,
                subject=None,
                common={},
            )
            report = self.svc.ft.ingest(
                items,
                row.gallery_name,
                command=f"job {job_id}",
                workers=settings.workers,
                on_progress=progress,
            )
        except _Interrupted:
            message = "interrupted by a server stop; resumes when the server starts again"
            self._update(job_id, status="queued", done=done, message=message)
            return
        except Exception as exc:  # noqa: BLE001 - recorded on the job, never a traceback
            if not isinstance(exc, FacetraceError):
                log.exception("job %s failed", job_id)
            self._finish(job_id, actor, "failed", done=done, message=_message(exc))
            return
        seen = report.images_seen
        self._finish(
            job_id,
            actor,
            "done",
            done=seen,
            total=max(seen, total or 0),
            result=report.to_dict(),
        )

    def _update(self, job_id: int, **values: Any) -> None:
        with self.svc.sessions.begin() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**values))

    def _finish(self, job_id: int, actor: audit.Actor, status: str, **values: Any) -> None:
        with uow.write(self.svc.sessions) as s:
            row = s.get(Job, job_id)
            assert row is not None
            row.status, row.finished_at = status, utcnow()
            for key, value in values.items():
                setattr(row, key, value)
            if status == "done":
                detail = {k: v for k, v in (row.result or {}).items() if k != "failures"}
                detail["failures"] = len((row.result or {}).get("failures", []))
            else:
                detail = {"message": row.message}
            audit.record(
                s,
                actor,
                f"ingest.{status}",
                object_type="job",
                object_id=job_id,
                detail={"gallery": row.gallery_name, **detail},
            )

    # -- listing (last: ``list`` shadows the builtin in the class body) ----------------

    def list(self, who: Principal, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The organisation's jobs, newest first."""
        access.require(who, "read")
        with uow.read(self.svc.sessions) as s:
            rows = s.execute(
                select(Job).where(Job.org_id == who.org_id).order_by(Job.id.desc()).limit(limit)
            ).scalars()
            return [job_dict(r) for r in rows]


def _writable(session: Session, who: Principal, name: str, *, create: bool) -> Gallery | None:
    """The gallery ``name`` if the caller's organisation owns it; with ``create``, a new
    one owned by it when no gallery has that name. A gallery of another organisation, or
    one made outside the service (no owner), has its name taken."""
    row = session.execute(select(Gallery).where(Gallery.name == name)).scalar()
    if row is None:
        if not create:
            return None
        row = store.get_or_create_gallery(session, name)
        if access.owner_of(session, row.id) is not None:  # made a moment ago by another
            raise ConflictError(f"gallery name {name!r} is taken; choose another name")
        access.own_new_gallery(session, who, row)
        return row
    if access.owner_of(session, row.id) != who.org_id:
        raise ConflictError(f"gallery name {name!r} is taken; choose another name")
    return row

"""The store stage: reading and writing galleries, images, faces and subjects.

Queries live here and nowhere else; callers pass a SQLAlchemy ``Session`` and get plain
records back. Each ingested image is written in one transaction with all its faces, so an
interrupted run leaves every image either wholly stored or not at all. Vectors are stored
as raw float32 bytes beside the name of the model that made them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from facetrace.db import (
    FaceRow,
    FaceSubject,
    FaceTally,
    Gallery,
    IngestBatch,
    IngestFailure,
    SourceImage,
    Subject,
    utcnow,
)
from facetrace.errors import NotFoundError
from facetrace.records import AnalysedImage


@dataclass(frozen=True)
class ImageMeta:
    """What is known about a gallery photo besides its pixels: identity and provenance."""

    path: str
    subject: str | None = None
    provenance: str = "cli"
    source_url: str | None = None
    source_description: str | None = None
    captured_at: str | None = None
    legal_basis: str | None = None
    notes: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FaceInfo:
    """What a search shows about a gallery face."""

    face_id: int
    gallery: str
    subject: str | None
    image: str
    source_url: str | None
    box: list[int]
    quality: dict[str, Any]
    # The subject's attributes and the photo's provenance, for the examiner.
    details: dict[str, Any] = field(default_factory=dict)


def get_gallery(session: Session, name: str) -> Gallery:
    gallery = session.scalar(select(Gallery).where(Gallery.name == name))
    if gallery is None:
        raise NotFoundError(f"no gallery named {name!r} (see `facetrace galleries`)")
    return gallery


def get_or_create_gallery(session: Session, name: str) -> Gallery:
    """The gallery called ``name``, created if new; safe when two processes (two ingests)
    create it at once: the insert does nothing if the other one got there first."""
    gallery = session.scalar(select(Gallery).where(Gallery.name == name))
    if gallery is not None:
        return gallery
    _insert_if_absent(session, Gallery, {"name": name, "generation": 0, "created_at": utcnow()})
    gallery = session.scalar(select(Gallery).where(Gallery.name == name))
    assert gallery is not None
    return gallery


def _insert_if_absent(session: Session, table: Any, row: dict[str, Any]) -> None:
    """Insert ``row`` unless its unique key is taken (by us or a concurrent process)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(sqlite_insert(table).values(**row).on_conflict_do_nothing())
    elif dialect == "postgresql":
        session.execute(postgresql_insert(table).values(**row).on_conflict_do_nothing())
    else:
        session.merge(table(**row))
        session.flush()


@dataclass(frozen=True)
class Tally:
    """A gallery's faces of one model as the database has them."""

    faces: int
    max_face_id: int


def tally(session: Session, gallery_id: int, model: str) -> Tally:
    """The gallery's tally for ``model``, kept by database triggers (migration 0002) on
    every insert and delete of a face, whoever makes it: one row read at any size."""
    row = session.get(FaceTally, (gallery_id, model), populate_existing=True)
    return Tally(0, 0) if row is None else Tally(row.faces, row.max_face_id)


def all_galleries(session: Session) -> list[Gallery]:
    return list(session.scalars(select(Gallery).order_by(Gallery.name)))


def start_batch(session: Session, gallery: Gallery, command: str) -> IngestBatch:
    """A new ingest batch; earlier batches still marked running were interrupted."""
    session.execute(
        update(IngestBatch)
        .where(IngestBatch.gallery_id == gallery.id, IngestBatch.status == "running")
        .values(status="interrupted")
    )
    batch = IngestBatch(gallery_id=gallery.id, command=command, status="running", counts={})
    session.add(batch)
    session.flush()
    return batch


def finish_batch(session: Session, batch_id: int, status: str, counts: dict[str, Any]) -> None:
    session.execute(
        update(IngestBatch)
        .where(IngestBatch.id == batch_id)
        .values(status=status, counts=counts, finished_at=utcnow())
    )


def known_hashes(session: Session, gallery_id: int) -> set[str]:
    """SHA-256 of every image already stored in the gallery."""
    rows = session.scalars(select(SourceImage.sha256).where(SourceImage.gallery_id == gallery_id))
    return set(rows)


def _subject(session: Session, gallery_id: int, name: str, attrs: dict[str, Any]) -> Subject:
    subject = session.scalar(
        select(Subject).where(Subject.gallery_id == gallery_id, Subject.name == name)
    )
    if subject is None:
        subject = Subject(gallery_id=gallery_id, name=name, attributes=dict(attrs))
        session.add(subject)
        session.flush()
    elif attrs:
        subject.attributes = {**(subject.attributes or {}), **attrs}
    return subject


DOMINANT = 1.5


def subject_face(image: AnalysedImage) -> int | None:
    """Which face of a photo labelled with one person is that person, if we can tell.

    The only face, or the largest when its box is at least ``DOMINANT`` times the area of
    any other (a portrait with bystanders). Otherwise ``None``: we cannot tell who is who.
    """
    if not image.faces:
        return None
    areas = sorted(
        ((f.box.width * f.box.height, i) for i, f in enumerate(image.faces)), reverse=True
    )
    if len(areas) == 1 or areas[0][0] >= DOMINANT * areas[1][0]:
        return areas[0][1]
    return None


def add_image(
    session: Session, gallery_id: int, batch_id: int, image: AnalysedImage, meta: ImageMeta
) -> list[int]:
    """Store one analysed image with its faces; returns the new face ids.

    A named subject is linked to one face only (see ``subject_face``); other faces in the
    photo are stored unnamed.
    """
    row = SourceImage(
        gallery_id=gallery_id,
        batch_id=batch_id,
        sha256=image.sha256,
        path=meta.path,
        source_url=meta.source_url,
        source_description=meta.source_description,
        captured_at=meta.captured_at,
        legal_basis=meta.legal_basis,
        notes=meta.notes,
        width=image.width,
        height=image.height,
        format=image.format,
        n_faces=len(image.faces),
    )
    session.add(row)
    session.flush()
    named = subject_face(image) if meta.subject else None
    subject = None
    if named is not None and meta.subject:
        subject = _subject(session, gallery_id, meta.subject, meta.attributes)
    ids = []
    for i, face in enumerate(image.faces):
        f = FaceRow(
            image_id=row.id,
            gallery_id=gallery_id,
            left=face.box.left,
            top=face.box.top,
            right=face.box.right,
            bottom=face.box.bottom,
            landmarks=face.landmarks_list(),
            quality=face.quality.to_dict(),
            model=face.model,
            embedding=np.asarray(face.embedding, np.float32).tobytes(),
        )
        session.add(f)
        session.flush()
        ids.append(f.id)
        if subject is not None and i == named:
            session.add(
                FaceSubject(face_id=f.id, subject_id=subject.id, provenance=meta.provenance)
            )
    return ids


def record_failure(
    session: Session, gallery_id: int, batch_id: int, path: str, reason: str
) -> None:
    session.add(IngestFailure(gallery_id=gallery_id, batch_id=batch_id, path=path, reason=reason))


def gallery_models(session: Session, gallery_id: int) -> set[str]:
    rows = session.scalars(select(FaceRow.model).where(FaceRow.gallery_id == gallery_id).distinct())
    return set(rows)


def face_count(session: Session, gallery_id: int, model: str) -> int:
    """Faces of ``model`` in the gallery, counted row by row (``tally`` is the fast way)."""
    q = select(func.count(FaceRow.id)).where(
        FaceRow.gallery_id == gallery_id, FaceRow.model == model
    )
    return int(session.scalar(q) or 0)


def iter_vectors(
    session: Session, gallery_id: int, model: str, after_id: int = 0, batch: int = 20_000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, raw vectors) of the gallery's faces with id > ``after_id``, in id order."""
    last = after_id
    while True:
        rows = session.execute(
            select(FaceRow.id, FaceRow.embedding)
            .where(FaceRow.gallery_id == gallery_id, FaceRow.model == model, FaceRow.id > last)
            .order_by(FaceRow.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        vecs = np.stack([np.frombuffer(r[1], np.float32) for r in rows])
        yield ids, vecs
        last = int(ids[-1])


def face_infos(session: Session, face_ids: list[int]) -> dict[int, FaceInfo]:
    """Display details of the given faces, keyed by face id (missing ids are absent)."""
    if not face_ids:
        return {}
    rows = session.execute(
        select(FaceRow, SourceImage, Gallery.name, Subject, FaceSubject.provenance)
        .join(SourceImage, SourceImage.id == FaceRow.image_id)
        .join(Gallery, Gallery.id == FaceRow.gallery_id)
        .outerjoin(FaceSubject, FaceSubject.face_id == FaceRow.id)
        .outerjoin(Subject, Subject.id == FaceSubject.subject_id)
        .where(FaceRow.id.in_(face_ids))
    ).all()
    return {
        f.id: FaceInfo(
            face_id=f.id,
            gallery=gname,
            subject=subject.name if subject else None,
            image=img.path,
            source_url=img.source_url,
            box=[f.left, f.top, f.right, f.bottom],
            quality=f.quality,
            details=_details(subject, img, how),
        )
        for f, img, gname, subject, how in rows
    }


def _details(subject: Subject | None, img: SourceImage, how: str | None) -> dict[str, Any]:
    """What is known of a candidate beyond its name, leaving out what is empty."""
    known = {
        "attributes": (subject.attributes or {}) if subject else {},
        "identity_from": how,
        "source_description": img.source_description,
        "captured_at": img.captured_at,
        "legal_basis": img.legal_basis,
    }
    return {k: v for k, v in known.items() if v}


def gallery_stats(session: Session, only: set[int] | None = None) -> list[dict[str, Any]]:
    """Counts per gallery (every gallery, or those whose id is in ``only``)."""
    out = []
    chosen = select(Gallery).order_by(Gallery.name)
    if only is not None:
        chosen = chosen.where(Gallery.id.in_(only))
    for g in session.scalars(chosen):
        images = session.scalar(select(func.count()).where(SourceImage.gallery_id == g.id))
        faces = session.scalar(select(func.count()).where(FaceRow.gallery_id == g.id))
        subjects = session.scalar(select(func.count()).where(Subject.gallery_id == g.id))
        failures = session.scalar(select(func.count()).where(IngestFailure.gallery_id == g.id))
        out.append(
            {
                "name": g.name,
                "images": int(images or 0),
                "faces": int(faces or 0),
                "subjects": int(subjects or 0),
                "failures": int(failures or 0),
            }
        )
    return out


def get_subject(session: Session, gallery: Gallery, name: str) -> Subject:
    subject = session.scalar(
        select(Subject).where(Subject.gallery_id == gallery.id, Subject.name == name)
    )
    if subject is None:
        raise NotFoundError(f"no subject named {name!r} in gallery {gallery.name!r}")
    return subject


def subject_stats(session: Session, gallery: Gallery) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Subject.name, func.count(FaceSubject.face_id), Subject.attributes)
        .outerjoin(FaceSubject, FaceSubject.subject_id == Subject.id)
        .where(Subject.gallery_id == gallery.id)
        .group_by(Subject.id)
        .order_by(Subject.name)
    ).all()
    return [{"name": n, "faces": int(c), "attributes": a or {}} for n, c, a in rows]


def forget_subject(
    session: Session, gallery: Gallery, name: str, photos_out: list[str] | None = None
) -> list[int]:
    """Delete a subject, their faces, and photos left with no face; returns face ids.

    The stored paths of the photos deleted (no face of anyone left in them) are appended
    to ``photos_out``, for a caller that keeps copies of the files to remove them too.

    Bumps the gallery's generation in the same transaction, so an index saved before the
    deletion can never be used again without being brought up to date.
    """
    subject = get_subject(session, gallery, name)
    face_ids = list(
        session.scalars(select(FaceSubject.face_id).where(FaceSubject.subject_id == subject.id))
    )
    image_ids = set(session.scalars(select(FaceRow.image_id).where(FaceRow.id.in_(face_ids))))
    session.execute(delete(FaceSubject).where(FaceSubject.subject_id == subject.id))
    session.execute(delete(FaceRow).where(FaceRow.id.in_(face_ids)))
    for image_id in image_ids:
        left = session.scalar(select(func.count()).where(FaceRow.image_id == image_id))
        if not left:
            if photos_out is not None:
                photos_out.append(session.get_one(SourceImage, image_id).path)
            session.execute(delete(SourceImage).where(SourceImage.id == image_id))
    session.execute(delete(Subject).where(Subject.id == subject.id))
    gallery.generation = (gallery.generation or 0) + 1
    return face_ids

"""Background ingest jobs: a zip of real photos into a new gallery, a job resumed after the
server died half-way, and every upload or caller that must be refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from facetrace import sources, store
from facetrace.db import FaceRow, FaceSubject, Gallery, SourceImage
from facetrace.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from facetrace.service import auth, uow
from facetrace.service.auth import Principal
from facetrace.service.jobs import JobRunner, safe_name
from facetrace.service.tables import AuditEntry, GalleryOwner, Job

PEOPLE = ["Aaron_Peirsol", "Abdullah_Gul"]


def principal(world, org: str = "north", role: str = "admin") -> Principal:  # type: ignore[no-untyped-def]
    with uow.read(world.service.sessions) as s:
        return auth.from_token(s, world.tokens[(org, role)])


def photo_zip(faces_dir: Path, per_person: int = 2) -> bytes:
    """A zip of ``per_person`` LFW photos of each of PEOPLE, one folder per person."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for person in PEOPLE:
            for photo in sorted((faces_dir / "lfw" / "images" / person).glob("*.jpg"))[:per_person]:
                zf.writestr(f"{person}/{photo.name}", photo.read_bytes())
    return out.getvalue()


def count(svc, model, gallery: str) -> int:  # type: ignore[no-untyped-def]
    with uow.read(svc.sessions) as s:
        gid = store.get_gallery(s, gallery).id
        return int(s.scalar(select(func.count()).where(model.gallery_id == gid)) or 0)


def test_zip_upload_ingests_into_a_new_owned_gallery(world, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    svc, admin = world.service, principal(world)
    job = svc.jobs.submit(admin, "intake", "../../evil name.zip", io.BytesIO(photo_zip(faces_dir)))
    assert job["status"] == "queued" and job["gallery"] == "intake"
    assert job["filename"] == "evil_name.zip"
    done = svc.jobs.wait(job["id"], timeout=120)
    assert done["status"] == "done", done["message"]
    assert (done["done"], done["total"], done["percent"]) == (4, 4, 100)
    assert done["finished_at"] and done["message"] is None
    result = done["result"]
    assert result["images_added"] == 4 and result["faces_added"] >= 4
    assert result["failures"] == []
    assert count(svc, SourceImage, "intake") == 4
    assert count(svc, FaceRow, "intake") == result["faces_added"]
    with uow.read(svc.sessions) as s:
        gallery = store.get_gallery(s, "intake")
        assert s.get(GalleryOwner, gallery.id).org_id == admin.org_id
        paths = s.scalars(select(SourceImage.path).where(SourceImage.gallery_id == gallery.id))
        # The upload stays: it is where face crops are read from.
        upload = svc.data_dir / "uploads" / str(job["id"]) / "evil_name.zip"
        assert all(p.startswith(f"{upload}!/") for p in paths) and upload.is_file()
        named = s.scalar(
            select(func.count())
            .select_from(FaceSubject)
            .join(FaceRow)
            .where(FaceRow.gallery_id == gallery.id)
        )
        assert named == 4  # folder per person
        actions = [
            (a.action, a.username)
            for a in s.scalars(select(AuditEntry).where(AuditEntry.object_type == "job"))
        ]
        assert actions == [("ingest.submit", "north-admin"), ("ingest.done", "north-admin")]
    assert svc.jobs.get(principal(world, "north", "viewer"), job["id"])["status"] == "done"
    assert [j["id"] for j in svc.jobs.list(admin)] == [job["id"]]
    south = principal(world, "south")
    with pytest.raises(NotFoundError, match=f"job {job['id']} does not exist"):
        svc.jobs.get(south, job["id"])
    assert svc.jobs.list(south) == []
    # The same zip again: nothing is stored twice.
    again = svc.jobs.wait(
        svc.jobs.submit(admin, "intake", "again.zip", io.BytesIO(photo_zip(faces_dir)))["id"]
    )
    assert again["status"] == "done" and again["result"]["already_in_gallery"] == 4
    assert count(svc, SourceImage, "intake") == 4


def test_job_left_running_by_a_killed_server_resumes_without_duplicates(  # type: ignore[no-untyped-def]
    world, faces_dir: Path
) -> None:
    svc, admin = world.service, principal(world)
    svc.jobs.stop()  # the server "dies": nothing runs what is submitted now
    job = svc.jobs.submit(admin, "resumed", "batch.zip", io.BytesIO(photo_zip(faces_dir, 3)))
    with uow.read(svc.sessions) as s:
        upload = Path(s.get(Job, job["id"]).upload_path)
    # It had stored two photos when it was killed, and its row still says running.
    items = sources.from_path(upload, max_file_bytes=10**8, max_archive_bytes=10**9)
    svc.ft.ingest((item for i, item in enumerate(items) if i < 2), "resumed", workers=1)
    with uow.write(svc.sessions) as s:
        s.execute(update(Job).where(Job.id == job["id"]).values(status="running", done=0))

    runner = JobRunner(svc)
    svc.jobs = runner  # the fixture's shutdown stops this one
    runner.start()
    done = runner.wait(job["id"], timeout=120)
    assert done["status"] == "done", done["message"]
    assert done["result"]["already_in_gallery"] == 2
    assert done["result"]["images_added"] == 4
    assert (done["done"], done["total"]) == (6, 6)
    assert count(svc, SourceImage, "resumed") == 6
    with uow.read(svc.sessions) as s:
        gallery = store.get_gallery(s, "resumed")
        faces = s.scalar(select(func.count()).where(FaceRow.gallery_id == gallery.id))
        images = s.scalar(
            select(func.count(func.distinct(SourceImage.sha256))).where(
                SourceImage.gallery_id == gallery.id
            )
        )
    assert images == 6 and faces >= 6


def test_stop_interrupts_and_start_resumes_and_single_photos_work(  # type: ignore[no-untyped-def]
    world, faces_dir: Path
) -> None:
    svc, admin = world.service, principal(world)
    job = svc.jobs.submit(admin, "stopped", "batch.zip", io.BytesIO(photo_zip(faces_dir)))
    svc.jobs.stop()  # long before the models are loaded and four photos analysed
    with uow.read(svc.sessions) as s:
        row = s.get(Job, job["id"])
        assert (row.status, row.finished_at) == ("queued", None)
    svc.jobs.start()
    done = svc.jobs.wait(job["id"], timeout=120)
    assert done["status"] == "done" and done["message"] is None
    assert count(svc, SourceImage, "stopped") == 4
    # One photo, whatever its name says, is ingested as a photo.
    photo = sorted((faces_dir / "lfw" / "images" / "Adrien_Brody").glob("*.jpg"))[0]
    single = svc.jobs.submit(admin, "stopped", "photo.zip", io.BytesIO(photo.read_bytes()))
    assert single["filename"] == "photo.zip.jpeg"
    done = svc.jobs.wait(single["id"], timeout=60)
    assert done["status"] == "done" and done["result"]["images_added"] == 1
    assert count(svc, SourceImage, "stopped") == 5


def test_refusals(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc, admin = world.service, principal(world)
    uploads = svc.data_dir / "uploads"

    def leftovers() -> list[Path]:
        return sorted(uploads.iterdir()) if uploads.exists() else []

    with pytest.raises(UnsupportedMediaError, match=r"notes\.txt: not a photo"):
        svc.jobs.submit(admin, "g", "notes.txt", io.BytesIO(b"just some text\n" * 40))
    with pytest.raises(UnsupportedMediaError, match=r"empty\.zip: the file is empty"):
        svc.jobs.submit(admin, "g", "empty.zip", io.BytesIO(b""))
    svc.upload_limit = 4096
    with pytest.raises(PayloadTooLargeError, match=r"big\.zip: .*4,096 bytes"):
        svc.jobs.submit(admin, "g", "big.zip", io.BytesIO(b"\0" * 10_000))
    assert leftovers() == []
    for role in ("examiner", "viewer", "reviewer"):
        with pytest.raises(ForbiddenError):
            svc.jobs.submit(principal(world, "north", role), "g", "a.zip", io.BytesIO(b"x"))
    with uow.write(svc.sessions) as s:
        theirs = store.get_or_create_gallery(s, "theirs")
        s.add(GalleryOwner(gallery_id=theirs.id, org_id=auth.get_org(s, "south agency").id))
        store.get_or_create_gallery(s, "from the command line")  # no owner
    for name in ("theirs", "from the command line"):
        with pytest.raises(ConflictError, match="taken"):
            svc.jobs.submit(admin, name, "a.zip", io.BytesIO(b"x"))
    assert leftovers() == []
    with uow.read(svc.sessions) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
        assert s.scalar(select(Gallery).where(Gallery.name == "g")) is None
    assert safe_name("C:\\photos\\my photos (2).zip") == "my_photos_2_.zip"
    assert safe_name("..") == "upload"


def test_a_failing_ingest_fails_the_job_with_its_message(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    svc, admin = world.service, principal(world)

    def broken(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(svc.ft, "ingest", broken)
    png = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(png, "PNG")
    png.seek(0)
    job = svc.jobs.wait(svc.jobs.submit(admin, "doomed", "white.png", png)["id"], timeout=30)
    assert job["status"] == "failed" and job["finished_at"]
    assert job["message"] == "unexpected error (RuntimeError: disk on fire); see the server log"
    assert "Traceback" not in job["message"]
    with uow.read(svc.sessions) as s:
        last = s.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
        assert (last.action, last.username) == ("ingest.failed", "north-admin")

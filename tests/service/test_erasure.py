"""Deleting a person on request removes their uploaded photos too, and nothing else.

A gallery uploaded as a zip or a tar.gz holds two people; deleting one through the API
removes their faces and rewrites the archive without their photos, while the other
person's photos keep their bytes (their crops still verify against the stored SHA-256).
Photos ingested from the shell are the owner's own files and are left alone.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.service.conftest import World, add_gallery

PEOPLE = {"Abdullah_Gul": 2, "Adrien_Brody": 1}


def archive(faces_dir: Path, kind: str) -> tuple[str, bytes]:
    photos = {
        f"{person}/{p.name}": p.read_bytes()
        for person, n in PEOPLE.items()
        for p in sorted((faces_dir / "lfw" / "images" / person).glob("*.jpg"))[:n]
    }
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in photos.items():
                z.writestr(name, data)
        return "people.zip", buf.getvalue()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in photos.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return "people.tar.gz", buf.getvalue()


def members(path: Path) -> list[str]:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return sorted(z.namelist())
    with tarfile.open(path) as t:
        return sorted(t.getnames())


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_deleting_a_person_erases_their_uploaded_photos(
    world: World, faces_dir: Path, kind: str
) -> None:
    c, admin = world.client, world.h("north", "admin")
    name, data = archive(faces_dir, kind)
    r = c.post("/api/v1/galleries/uploads/ingest", files={"file": (name, data)}, headers=admin)
    assert r.status_code == 202, r.text
    assert world.service.jobs.wait(r.json()["id"], timeout=120)["status"] == "done"
    stored = next((world.service.data_dir / "uploads").rglob(name))
    assert len(members(stored)) == 3
    kept = c.get("/api/v1/galleries/uploads/subjects", headers=admin).json()
    assert {s["name"] for s in kept} == set(PEOPLE)

    r = c.delete("/api/v1/galleries/uploads/subjects/Abdullah_Gul", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["faces_removed"] == 2 and r.json()["uploaded_photos_erased"] == 2
    assert [m.split("/")[0] for m in members(stored)] == ["Adrien_Brody"]
    left = c.get("/api/v1/galleries/uploads/subjects", headers=admin).json()
    assert [s["name"] for s in left] == ["Adrien_Brody"]
    with world.service.sessions() as s:
        from sqlalchemy import select

        from facetrace.db import FaceRow

        face = s.execute(select(FaceRow.id)).scalars().one()
    crop = c.get(f"/api/v1/faces/{face}/crop", headers=admin)
    assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8"
    entries = c.get("/api/v1/audit?action=subject.delete", headers=admin).json()
    assert entries[0]["detail"]["uploaded_photos_erased"] == 2


def test_photos_ingested_from_the_shell_are_left_alone(world: World, faces_dir: Path) -> None:
    add_gallery(world.service, faces_dir)
    own = sorted((world.service.data_dir.parent / "gallery-records").rglob("*.jpg"))
    r = world.client.delete(
        "/api/v1/galleries/records/subjects/Aaron_Peirsol", headers=world.h("north", "admin")
    )
    assert r.json()["faces_removed"] == 1 and r.json()["uploaded_photos_erased"] == 0
    assert all(p.is_file() for p in own)

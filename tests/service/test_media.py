"""Face crops for the pages: from plain files and archive members, only for organisations
that may see the gallery, and never from a source that is gone or was replaced."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from facetrace import sources, store
from facetrace.db import FaceRow, SourceImage
from facetrace.errors import NotFoundError
from facetrace.service import auth, media, uow
from facetrace.service.auth import Principal
from facetrace.service.tables import GalleryOwner
from tests.service.conftest import add_gallery


def principal(world, org: str = "north", role: str = "admin") -> Principal:  # type: ignore[no-untyped-def]
    with uow.read(world.service.sessions) as s:
        return auth.from_token(s, world.tokens[(org, role)])


def faces_of(svc, gallery: str) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    """(face id, source path) of every face in the gallery."""
    with uow.read(svc.sessions) as s:
        gid = store.get_gallery(s, gallery).id
        rows = s.execute(
            select(FaceRow.id, SourceImage.path)
            .join(SourceImage, SourceImage.id == FaceRow.image_id)
            .where(FaceRow.gallery_id == gid)
            .order_by(FaceRow.id)
        ).all()
    return [(int(f), str(p)) for f, p in rows]


def crop(svc, who: Principal, face_id: int, max_side: int = 256) -> bytes:  # type: ignore[no-untyped-def]
    with uow.read(svc.sessions) as s:
        return media.face_crop(s, who, face_id, max_side)


def as_jpeg(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "JPEG"
    return image


def test_face_crop_from_files_only_for_those_who_may_see_it(world, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    svc = world.service
    probes = add_gallery(svc, faces_dir)
    (face_id, path), *_ = faces_of(svc, "records")
    north, south = principal(world), principal(world, "south")

    image = as_jpeg(crop(svc, north, face_id))
    assert 64 <= max(image.size) <= 256 and min(image.size) >= 48
    assert 2_000 < len(crop(svc, north, face_id)) < 60_000
    assert max(as_jpeg(crop(svc, north, face_id, max_side=64)).size) == 64

    missing = f"face {face_id} does not exist"
    with pytest.raises(NotFoundError, match=f"^{missing}$"):
        crop(svc, south, face_id)
    with pytest.raises(NotFoundError, match="^face 999999 does not exist$"):
        crop(svc, north, 999_999)

    # Probe photos: a face of it, and the whole photo downscaled.
    probe = next(iter(probes.values()))
    assert max(as_jpeg(media.probe_crop(probe, [80, 80, 170, 170])).size) <= 256
    assert as_jpeg(media.probe_image(probe, max_side=100)).size == (100, 100)
    assert as_jpeg(media.probe_image(probe)).size == (250, 250)  # never enlarged

    # A source replaced since ingest is not shown as the face that was matched.
    original = Path(path).read_bytes()
    Path(path).write_bytes(Path(probe).read_bytes())
    with pytest.raises(NotFoundError, match="has changed"):
        crop(svc, north, face_id)
    Path(path).unlink()
    with pytest.raises(NotFoundError, match=f"source image of face {face_id} is no longer"):
        crop(svc, north, face_id)
    Path(path).write_bytes(original)
    assert as_jpeg(crop(svc, north, face_id))


def test_face_crop_from_zip_and_tar_members(world, faces_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc = world.service
    lfw = faces_dir / "lfw" / "images"
    first, second = sorted((lfw / "Aaron_Peirsol").glob("*.jpg"))[:2]
    root = tmp_path / "archives"
    root.mkdir()
    with zipfile.ZipFile(root / "a.zip", "w") as zf:
        zf.write(first, f"Aaron_Peirsol/{first.name}")
    with tarfile.open(root / "b.tar.gz", "w:gz") as tf:
        tf.add(second, f"Aaron_Peirsol/{second.name}")
    items = sources.from_path(root, max_file_bytes=10**8, max_archive_bytes=10**9)
    svc.ft.ingest(items, "archived", workers=1)
    with uow.write(svc.sessions) as s:
        gid = store.get_gallery(s, "archived").id
        s.add(GalleryOwner(gallery_id=gid, org_id=auth.get_org(s, "north agency").id))
    faces = faces_of(svc, "archived")
    assert {Path(p.split("!/")[0]).name for _f, p in faces} == {"a.zip", "b.tar.gz"}
    for face_id, _path in faces:
        assert max(as_jpeg(crop(svc, principal(world), face_id)).size) <= 256

    # Unsafe or absent member names are refused, never read from outside the archive.
    for member in ("../a.zip", "/etc/passwd", "Aaron_Peirsol/nobody.jpg"):
        with pytest.raises(NotFoundError):
            media.read_source(f"{root / 'a.zip'}!/{member}")
        with pytest.raises(NotFoundError):
            media.read_source(f"{root / 'b.tar.gz'}!/{member}")
    (root / "a.zip").unlink()
    zip_face = next(f for f, p in faces if "a.zip!/" in p)
    with pytest.raises(NotFoundError, match="no longer available"):
        crop(svc, principal(world), zip_face)


def test_crop_margin_is_clamped_to_the_image() -> None:
    import numpy as np

    pixels = np.zeros((100, 200, 3), np.uint8)
    assert media.crop(pixels, [40, 20, 80, 60]).shape == (60, 60, 3)  # 10 px each side
    assert media.crop(pixels, [-10, -10, 30, 30]).shape == (40, 40, 3)
    assert media.crop(pixels, [300, 300, 400, 400]).shape == (100, 200, 3)

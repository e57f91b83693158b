"""Pictures for the pages: gallery face crops, probe crops and downscaled probe photos.

A gallery face is cut from its source image, read again from where it was ingested: a
plain file, or a member of a zip or tar archive named ``ARCHIVE!/member/path`` (see
``facetrace.sources``). The bytes must still hash to what was ingested, so a file replaced
since then is never shown as the face that was matched. Crops keep a 25% margin around
the face box, clamped to the image, and everything is sent as a downscaled JPEG.

Faces of galleries the caller's organisation cannot see are "not found", in the same
words as faces that do not exist.
"""

from __future__ import annotations

import io
import math
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from facetrace.db import FaceRow, SourceImage
from facetrace.decode import decode_bytes, downscale, read_file, sha256_hex
from facetrace.errors import InputError, NotFoundError
from facetrace.service import access
from facetrace.service.auth import Principal
from facetrace.service.tables import ShownFace
from facetrace.sources import SEPARATOR, _unsafe

MARGIN = 0.25
JPEG_QUALITY = 88
# The defaults of ``Settings``; callers with other limits pass theirs.
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_PIXELS = 100_000_000


def face_crop(
    session: Session,
    who: Principal,
    face_id: int,
    max_side: int = 256,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> bytes:
    """A JPEG of gallery face ``face_id`` with a margin, at most ``max_side`` pixels."""
    access.require(who, "read")
    face = session.get(FaceRow, face_id)
    seen = access.visible_galleries(session, who)
    if face is None or face.gallery_id not in seen or not _may_see(session, who, face, seen):
        raise NotFoundError(f"face {face_id} does not exist")
    image = session.get(SourceImage, face.image_id)
    gone = f"source image of face {face_id} is no longer available"
    if image is None:
        raise NotFoundError(gone)
    try:
        data = read_source(image.path, max_file_bytes=max_file_bytes, sha256=image.sha256)
    except (InputError, NotFoundError):
        raise NotFoundError(gone) from None
    if sha256_hex(data) != image.sha256:
        raise NotFoundError(f"{gone} (its file has changed since it was added)")
    pixels = decode_bytes(data, image.path, max_pixels=max_pixels).pixels
    box = [face.left, face.top, face.right, face.bottom]
    return jpeg(crop(pixels, box), max_side)


def _may_see(session: Session, who: Principal, face: FaceRow, seen: dict[int, str]) -> bool:
    """Crops are for faces a search of the organisation showed (no bulk browsing of a
    gallery), and for the owning organisation's administrators."""
    if who.role == "admin" and seen.get(face.gallery_id) == "own":
        return True
    return session.get(ShownFace, (who.org_id, face.id)) is not None


def probe_crop(
    path: Path,
    box: list[int],
    max_side: int = 256,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> bytes:
    """A JPEG of one face of a probe photo (``box``: left, top, right, bottom)."""
    if len(box) != 4:
        raise ValueError(f"a box is left, top, right, bottom; not {box!r}")
    return jpeg(crop(_probe_pixels(path, max_file_bytes, max_pixels), box), max_side)


def probe_image(
    path: Path,
    max_side: int = 1600,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> bytes:
    """A probe photo as a JPEG, upright and at most ``max_side`` pixels."""
    return jpeg(_probe_pixels(path, max_file_bytes, max_pixels), max_side)


def _probe_pixels(path: Path, max_file_bytes: int, max_pixels: int) -> np.ndarray:
    try:
        data = read_file(path, max_file_bytes=max_file_bytes)
    except InputError:
        raise NotFoundError(f"probe photo {Path(path).name} is no longer available") from None
    return decode_bytes(data, str(path), max_pixels=max_pixels).pixels


def crop(pixels: np.ndarray, box: list[int], margin: float = MARGIN) -> np.ndarray:
    """The box widened by ``margin`` of its size on each side, clamped to the image; the
    whole image when the box lies outside it."""
    height, width = pixels.shape[:2]
    left, top, right, bottom = box
    mx, my = (right - left) * margin, (bottom - top) * margin
    x0, y0 = max(0, math.floor(left - mx)), max(0, math.floor(top - my))
    x1, y1 = min(width, math.ceil(right + mx)), min(height, math.ceil(bottom + my))
    if x1 <= x0 or y1 <= y0:
        return pixels
    return pixels[y0:y1, x0:x1]


def jpeg(pixels: np.ndarray, max_side: int) -> bytes:
    small, _ = downscale(np.ascontiguousarray(pixels), max(1, max_side))
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(small)).save(
        out, "JPEG", quality=JPEG_QUALITY, optimize=True
    )
    return out.getvalue()


def read_source(
    path: str, *, max_file_bytes: int = MAX_FILE_BYTES, sha256: str | None = None
) -> bytes:
    """The bytes of a gallery image as ingest named it: a file, or ``ARCHIVE!/member``.

    NotFoundError when it is gone, or when a member name is unsafe (absolute, ``..``) or
    not a regular file; InputError (from ``read_file``) when a plain file is unusable.
    ``sha256`` picks among tar members of the same name the one that was ingested.
    """
    archive, member = split_member(path)
    if member is None:
        return read_file(archive, max_file_bytes=max_file_bytes)
    return read_member(archive, member, max_file_bytes, sha256)


def split_member(path: str) -> tuple[Path, str | None]:
    """(archive, member) for ``ARCHIVE!/member`` whose archive exists, else (path, None)."""
    start = 0
    while (cut := path.find(SEPARATOR, start)) != -1:
        archive = Path(path[:cut])
        if archive.is_file():
            return archive, path[cut + len(SEPARATOR) :]
        start = cut + 1
    return Path(path), None


def read_member(
    archive: Path, member: str, max_file_bytes: int, sha256: str | None = None
) -> bytes:
    """One regular-file member of a zip or tar archive, read without extracting."""
    label = f"{archive}{SEPARATOR}{member}"
    if not member or _unsafe(member) or PurePosixPath(member).name in ("", ".", ".."):
        raise NotFoundError(f"{label}: unsafe name for an archive member; refused")
    try:
        if zipfile.is_zipfile(archive):
            return _zip_member(archive, member, max_file_bytes, label)
        return _tar_member(archive, member, max_file_bytes, label, sha256)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, KeyError) as exc:
        raise NotFoundError(f"{label}: cannot be read from the archive ({exc})") from None


def _zip_member(archive: Path, member: str, max_file_bytes: int, label: str) -> bytes:
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
        if info.is_dir() or (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise NotFoundError(f"{label}: not a regular file in the archive")
        if info.file_size > max_file_bytes:
            raise NotFoundError(f"{label}: over the limit of {max_file_bytes:,} bytes")
        with zf.open(info) as fh:
            data = fh.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise NotFoundError(f"{label}: larger than the archive says")
    return data


def _tar_member(
    archive: Path, member: str, max_file_bytes: int, label: str, sha256: str | None
) -> bytes:
    """The member, streaming the archive in order; of several with that name, the one
    whose bytes hash to ``sha256`` (ingest stored each), else the first."""
    first: bytes | None = None
    with tarfile.open(archive) as tf:
        for info in tf:
            if info.name != member:
                continue
            if not info.isfile():
                raise NotFoundError(f"{label}: not a regular file in the archive")
            if info.size > max_file_bytes:
                raise NotFoundError(f"{label}: over the limit of {max_file_bytes:,} bytes")
            fh = tf.extractfile(info)
            data = fh.read() if fh is not None else b""
            if sha256 is None or sha256_hex(data) == sha256:
                return data
            first = data if first is None else first
    if first is None:
        raise NotFoundError(f"{label}: no such member in the archive")
    return first

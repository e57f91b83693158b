"""Deleting a person's photos from the service's uploads once their faces are forgotten.

``facetrace forget`` removes a subject's faces, vectors and index entries, and the rows of
photos left with no face. The service also keeps what agencies uploaded, under
``DATA/uploads/<job>/``, because crops of gallery faces are read from it. Those photos
must go too: a plain file is deleted; a member of a zip or tar archive is removed by
writing the archive again without it (the other members keep their bytes, so their
stored SHA-256 still matches) and replacing it atomically. Paths outside the uploads
folder are the owner's own files (ingested from the shell) and are not touched.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import zipfile
from pathlib import Path

from facetrace.service.media import split_member

_TAR_WRITE_MODES = (
    ((".tar.gz", ".tgz"), "w:gz"),
    ((".tar.bz2", ".tbz2"), "w:bz2"),
    ((".tar.xz", ".txz"), "w:xz"),
)


def purge_uploads(paths: list[str], uploads: Path) -> int:
    """Remove the photos at ``paths`` that lie in ``uploads``; returns how many."""
    prefix = f"{uploads}{os.sep}"
    members: dict[Path, set[str]] = {}
    removed = 0
    for path in paths:
        if not path.startswith(prefix):
            continue
        archive, member = split_member(path)
        if member is None:
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
                removed += 1
        else:
            members.setdefault(archive, set()).add(member)
    for archive, drop in members.items():
        removed += rewrite_without(archive, drop)
    return removed


def rewrite_without(archive: Path, drop: set[str]) -> int:
    """Write ``archive`` again without the members named in ``drop``; how many went."""
    tmp = archive.with_name(archive.name + ".rewrite")
    gone = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tmp, "w") as dst:
                for info in src.infolist():
                    if info.filename in drop:
                        gone += 1
                        continue
                    dst.writestr(info, src.read(info))
        else:
            mode = next(
                (m for ends, m in _TAR_WRITE_MODES if archive.name.lower().endswith(ends)), "w"
            )
            with tarfile.open(archive, "r:*") as src, tarfile.open(tmp, mode) as dst:  # type: ignore[call-overload]
                for member in src:
                    if member.name in drop:
                        gone += 1
                        continue
                    data = src.extractfile(member) if member.isfile() else None
                    dst.addfile(member, data)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return gone

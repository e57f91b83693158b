"""Where gallery photos come from: folders, manifests and archives, as ``Item`` records.

Conventions:
- Folder-per-person layout: a file at ``ROOT/.../NAME/photo.jpg`` (not directly in ROOT)
  belongs to the subject named exactly ``NAME``, its immediate folder. Files directly in
  ROOT get the ``default_subject`` (``--subject``) or none.
- Manifests (CSV with a header, or JSONL) have a ``path`` column, resolved against the
  manifest's folder, and optional ``subject``, ``source_url``, ``captured_at``, ``notes``,
  ``source_description`` and ``legal_basis``; other columns become subject attributes.
- Archives (.zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) are read in place, never
  extracted. Members with absolute paths, ``..``, links or special types are refused;
  each member is capped at ``max_file_bytes`` and the whole at ``max_archive_bytes``.
  A member is named ``ARCHIVE!/member/path`` and follows the folder-per-person rule.
Files that cannot be used become ``Item``s with an ``error`` so that the batch reports
them instead of stopping.
"""

from __future__ import annotations

import csv
import json
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from facetrace.decode import read_file
from facetrace.errors import ArchiveError, FacetraceError, ManifestError
from facetrace.store import ImageMeta

SEPARATOR = "!/"  # between an archive and a member: ARCHIVE!/member/path
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MANIFEST_FIELDS = (
    "subject",
    "source_url",
    "captured_at",
    "notes",
    "source_description",
    "legal_basis",
)
SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class Item:
    """One photo to ingest: how to read its bytes, and what is known about it."""

    meta: ImageMeta
    read: Callable[[], bytes] = field(repr=False)
    error: str | None = None


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _subject_for(parts: tuple[str, ...], default: str | None) -> tuple[str | None, str]:
    if len(parts) >= 2:
        return parts[-2], "folder"
    return default, "cli"


def _meta(path: str, subject: str | None, provenance: str, common: dict[str, Any]) -> ImageMeta:
    return ImageMeta(path=path, subject=subject, provenance=provenance, **common)


def _failed(path: str, reason: str) -> Item:
    def nothing() -> bytes:
        raise AssertionError("a failed item is never read")

    return Item(ImageMeta(path=path), nothing, reason)


def from_path(
    root: Path,
    *,
    max_file_bytes: int,
    max_archive_bytes: int,
    subject: str | None = None,
    common: dict[str, Any] | None = None,
) -> Iterator[Item]:
    """Items for a file, a folder (recursively, sorted) or an archive."""
    common = common or {}
    if is_archive(root) and root.is_file():
        yield from from_archive(root, max_file_bytes, max_archive_bytes, subject, common)
        return
    if root.is_file():
        yield Item(_meta(str(root), subject, "cli", common), _reader(root, max_file_bytes))
        return
    if not root.exists():
        yield _failed(str(root), "no such file or folder")
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        if path.name in SKIP_NAMES or path.name.startswith("._"):
            continue
        if is_archive(path):
            yield from from_archive(path, max_file_bytes, max_archive_bytes, subject, common)
            continue
        name, provenance = _subject_for(path.relative_to(root).parts, subject)
        yield Item(_meta(str(path), name, provenance, common), _reader(path, max_file_bytes))


def _reader(path: Path, max_file_bytes: int) -> Callable[[], bytes]:
    return lambda: read_file(path, max_file_bytes=max_file_bytes)


def from_manifest(
    manifest: Path, *, max_file_bytes: int, common: dict[str, Any] | None = None
) -> Iterator[Item]:
    """Items listed in a CSV or JSONL manifest."""
    common = common or {}
    for line_no, row in _manifest_rows(manifest):
        raw_path = str(row.get("path") or "").strip()
        if not raw_path:
            yield _failed(f"{manifest}:{line_no}", "manifest row has no path")
            continue
        path = Path(raw_path)
        if not path.is_absolute():
            path = manifest.parent / path
        values = {**common, **{k: _text(row.get(k)) for k in MANIFEST_FIELDS if k != "subject"}}
        values = {k: v for k, v in values.items() if v is not None}
        extra = {k: v for k, v in row.items() if k not in (*MANIFEST_FIELDS, "path") and v}
        meta = ImageMeta(
            path=str(path),
            subject=_text(row.get("subject")),
            provenance="manifest",
            attributes=extra,
            **values,
        )
        yield Item(meta, _reader(path, max_file_bytes))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _manifest_rows(manifest: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest ({exc})", path=manifest) from None
    if manifest.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"line {i} is not JSON ({exc.msg})", path=manifest) from None
            if not isinstance(row, dict):
                raise ManifestError(f"line {i} is not a JSON object", path=manifest)
            yield i, row
        return
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "path" not in [f.strip() for f in reader.fieldnames]:
        raise ManifestError("CSV manifest needs a header row with a 'path' column", path=manifest)
    for i, row in enumerate(reader, 2):
        yield i, {(k or "").strip(): v for k, v in row.items()}


def from_archive(
    archive: Path,
    max_file_bytes: int,
    max_archive_bytes: int,
    subject: str | None,
    common: dict[str, Any],
) -> Iterator[Item]:
    """Items for the regular-file members of a zip or tar archive, safely."""
    try:
        members = (
            _zip_members(archive)
            if zipfile.is_zipfile(archive)
            else _tar_members(archive, max_file_bytes)
        )
        total = 0
        for name, size, error, read in members:
            label = f"{archive}{SEPARATOR}{name}"
            if error is None and size > max_file_bytes:
                error = f"member is {size:,} bytes, over the limit of {max_file_bytes:,}"
            total += size
            if error is None and total > max_archive_bytes:
                yield _failed(label, f"archive exceeds {max_archive_bytes:,} bytes uncompressed")
                return
            if error is not None:
                yield _failed(label, error)
                continue
            parts = PurePosixPath(name).parts
            who, provenance = _subject_for(parts, subject)
            yield Item(_meta(label, who, provenance, common), read)
    except FacetraceError as exc:
        yield _failed(str(archive), exc.reason)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        yield _failed(str(archive), f"damaged archive ({exc})")


Member = tuple[str, int, str | None, Callable[[], bytes]]


def _unsafe(name: str) -> str | None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts or ":" in p.parts[0]:
        return "unsafe path in archive (absolute or leaving the archive); refused"
    return None


def _zip_members(archive: Path) -> Iterator[Member]:
    with zipfile.ZipFile(archive) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if info.is_dir():
                continue
            if PurePosixPath(info.filename).name in SKIP_NAMES or "__MACOSX" in info.filename:
                continue
            mode = (info.external_attr >> 16) & 0o170000
            error = _unsafe(info.filename) or (
                "symbolic link in archive; refused" if mode == 0o120000 else None
            )
            yield (
                info.filename,
                info.file_size,
                error,
                _zip_reader(archive, info.filename, info.file_size),
            )


def _zip_reader(archive: Path, name: str, size: int) -> Callable[[], bytes]:
    def read() -> bytes:
        with zipfile.ZipFile(archive) as zf, zf.open(name) as fh:
            data = fh.read(size + 1)
        if len(data) > size:
            raise ArchiveError(
                "member is larger than the archive says", path=f"{archive}{SEPARATOR}{name}"
            )
        return data

    return read


def _tar_members(archive: Path, max_file_bytes: int) -> Iterator[Member]:
    """Members in archive order, each read while the archive is open (streams .tar.gz)."""
    with tarfile.open(archive) as tf:
        for info in tf:
            if info.isdir() or PurePosixPath(info.name).name in SKIP_NAMES:
                continue
            error = _unsafe(info.name)
            if error is None and not info.isfile():
                error = "link or special file in archive; refused"
            data = b""
            if error is None and info.size <= max_file_bytes:
                fh = tf.extractfile(info)
                data = fh.read() if fh is not None else b""
            yield info.name, info.size, error, _constant(data)


def count_items(paths: list[Path], manifest: Path | None) -> int | None:
    """How many items ``paths`` and ``manifest`` hold, for a progress bar (None if unknown)."""
    try:
        total = 0
        for root in paths:
            files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
            for f in files:
                if not is_archive(f):
                    total += 1
                elif zipfile.is_zipfile(f):
                    with zipfile.ZipFile(f) as zf:
                        total += sum(not i.is_dir() for i in zf.infolist())
                else:
                    with tarfile.open(f) as tf:
                        total += sum(not m.isdir() for m in tf.getmembers())
        if manifest is not None:
            total += sum(1 for _ in _manifest_rows(manifest))
        return total
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, FacetraceError):
        return None


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data

"""The one error hierarchy of facetrace.

Domain code raises these; the outside world sees them through exactly one mapping per
boundary (``facetrace.cli`` for the command line). Every class carries ``exit_code``, the
process status the CLI uses for it, and a message that names the file or object at fault.

    FacetraceError                      base of everything raised on purpose (exit 1)
    ├── ConfigError                     bad settings, flags or environment (exit 2)
    ├── InputError                      one input file cannot be used (exit 3)
    │   ├── EmptyFileError              the file has zero bytes
    │   ├── UnreadableFileError         the file cannot be opened or read
    │   ├── NotAnImageError             the bytes are not an image format we decode
    │   ├── CorruptImageError           an image format, but damaged or truncated
    │   ├── ImageTooLargeError          over the byte or pixel cap (decompression bombs)
    │   └── ArchiveError                a zip/tar that is unsafe, too large or damaged
    ├── ManifestError                   a CSV/JSONL manifest that cannot be read (exit 3)
    ├── NoFaceError                     a photo in which no face was found (exit 4)
    ├── NotFoundError                   a named gallery, subject or face does not exist (exit 5)
    ├── ModelMismatchError              vectors made by different models compared (exit 6)
    ├── IndexError_                     the vector index cannot be used (exit 7)
    │   └── IndexCorruptError           an index file is damaged; rebuild with `reindex`
    └── ServiceError                    a request the service refuses (exit 8)
        ├── AuthError                   not signed in, bad password, expired or revoked token
        ├── ForbiddenError              signed in, but the role does not allow it
        ├── ConflictError               clashes with what exists (duplicate, second decision)
        ├── RequestError                a request that is malformed or fails validation
        ├── PayloadTooLargeError        an upload over the size limit
        ├── UnsupportedMediaError       an upload that is not an image (or archive)
        ├── RateLimitError              too many attempts; wait and try again
        └── AuditChainError             the audit log was edited, deleted or reordered

``facetrace.service.http`` maps these to HTTP status codes, and NotFoundError to 404.

Conventions: messages are one line, start with the object (``photo.jpg: ...``) when there
is one, and end with what to do when something can be done.
"""

from __future__ import annotations

from pathlib import Path


class FacetraceError(Exception):
    """Base class of every error facetrace raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ConfigError(FacetraceError):
    """Settings, flags or environment variables that cannot be used."""

    exit_code = 2


class InputError(FacetraceError):
    """One input file cannot be used; a batch records it and goes on."""

    exit_code = 3


class EmptyFileError(InputError):
    """The file is empty (zero bytes)."""


class UnreadableFileError(InputError):
    """The file cannot be opened or read (missing, a directory, no permission)."""


class NotAnImageError(InputError):
    """The bytes are not in any image format facetrace decodes."""


class CorruptImageError(InputError):
    """The file claims an image format but is damaged or truncated."""


class ImageTooLargeError(InputError):
    """The file or its decoded pixels exceed the configured caps."""


class ArchiveError(InputError):
    """An archive that is unsafe (path traversal, links), too large or damaged."""


class ManifestError(FacetraceError):
    """A manifest file that cannot be parsed or lacks a required column."""

    exit_code = 3


class NoFaceError(FacetraceError):
    """No face was found in a photo where one was needed."""

    exit_code = 4


class NotFoundError(FacetraceError):
    """A named gallery, subject or face does not exist."""

    exit_code = 5


class ModelMismatchError(FacetraceError):
    """Embeddings from different models cannot be compared or searched together."""

    exit_code = 6


class IndexError_(FacetraceError):  # noqa: N801 - avoid shadowing the builtin IndexError
    """The vector index cannot be used as it is."""

    exit_code = 7


class IndexCorruptError(IndexError_):
    """An index file is damaged or unreadable; `facetrace reindex` rebuilds it."""


class ServiceError(FacetraceError):
    """A request the web service or API refuses."""

    exit_code = 8


class AuthError(ServiceError):
    """Not signed in, wrong credentials, or an expired or revoked token."""


class ForbiddenError(ServiceError):
    """Signed in, but the user's role or organisation does not allow this."""


class ConflictError(ServiceError):
    """The request clashes with what exists: a duplicate name, a second decision."""


class RequestError(ServiceError):
    """A request that is malformed or fails validation."""


class PayloadTooLargeError(ServiceError):
    """An upload over the configured size limit."""


class UnsupportedMediaError(ServiceError):
    """An upload that is not an image (or, for ingest, an archive of images)."""


class RateLimitError(ServiceError):
    """Too many attempts in a short time; the message says when to try again."""


class AuditChainError(ServiceError):
    """The audit log's hash chain is broken: an entry was edited, deleted or reordered."""

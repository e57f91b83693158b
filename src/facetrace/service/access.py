"""Who may see and do what: roles, and the organisation boundary.

Roles: ``admin`` (users, galleries, grants, ingest, deletion, the audit log, cases and
searches, but no review decisions: the audit log shows decisions, so an administrator could
never decide blind), ``examiner`` (cases, probes, searches, review decisions), ``reviewer``
(review decisions), ``viewer`` (reads).

Everything belongs to one organisation; a gallery may be shared read-only with another
by a grant. Objects of an organisation the user cannot see are reported as not
found (404), never as forbidden, so their existence does not leak.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrace import store
from facetrace.db import Gallery
from facetrace.errors import ForbiddenError, NotFoundError
from facetrace.service import audit
from facetrace.service.auth import Principal
from facetrace.service.tables import CaseFile, GalleryGrant, GalleryOwner

PERMISSIONS = {
    "read": {"admin", "examiner", "reviewer", "viewer"},
    "case.write": {"admin", "examiner"},
    "search": {"admin", "examiner"},
    # Not administrators: they read the audit log, which records every decision, so they
    # could never decide blind (the two-person rule).
    "review": {"examiner", "reviewer"},
    "gallery.write": {"admin"},
    "users": {"admin"},
    "audit": {"admin"},
}


def require(who: Principal, permission: str) -> None:
    if who.role not in PERMISSIONS[permission]:
        allowed = ", ".join(sorted(PERMISSIONS[permission]))
        raise ForbiddenError(f"role {who.role!r} may not do this ({permission}: {allowed})")


def permissions(role: str) -> set[str]:
    """What a role may do: the names in ``PERMISSIONS`` that list it."""
    return {name for name, roles in PERMISSIONS.items() if role in roles}


def visible_galleries(session: Session, who: Principal) -> dict[int, str]:
    """Gallery id -> ``own`` or ``granted``, for the user's organisation."""
    owned = session.execute(
        select(GalleryOwner.gallery_id).where(GalleryOwner.org_id == who.org_id)
    ).scalars()
    out = {gid: "own" for gid in owned}
    granted = session.execute(
        select(GalleryGrant.gallery_id).where(GalleryGrant.org_id == who.org_id)
    ).scalars()
    for gid in granted:
        out.setdefault(gid, "granted")
    return out


def visible_gallery_names(
    session: Session, who: Principal, visible: dict[int, str] | None = None
) -> dict[str, str]:
    """Gallery name -> ``own`` or ``granted``, sorted by name (``visible``: what
    ``visible_galleries`` gave, when the caller has it already)."""
    if visible is None:
        visible = visible_galleries(session, who)
    rows = session.execute(select(Gallery).where(Gallery.id.in_(visible))).scalars()
    return dict(sorted((g.name, visible[g.id]) for g in rows))


def gallery_list(session: Session, who: Principal) -> list[dict[str, Any]]:
    """The galleries the user may see, with their counts and ``access`` (own/granted)."""
    visible = visible_galleries(session, who)
    names = visible_gallery_names(session, who, visible)
    return [{**g, "access": names[g["name"]]} for g in store.gallery_stats(session, set(visible))]


def gallery(session: Session, who: Principal, name: str, *, write: bool = False) -> Gallery:
    """A gallery the user can see (owned, to write); else not found or forbidden."""
    row = session.execute(select(Gallery).where(Gallery.name == name)).scalar()
    seen = visible_galleries(session, who).get(row.id) if row else None
    if row is None or seen is None:
        raise NotFoundError(f"gallery {name!r} does not exist")
    if write:
        require(who, "gallery.write")
        if seen != "own":
            raise ForbiddenError(f"gallery {name!r} is shared with you read-only")
    return row


def own_new_gallery(session: Session, who: Principal, gallery: Gallery) -> None:
    """Make a gallery just created the user's organisation's own, and audit it."""
    session.add(GalleryOwner(gallery_id=gallery.id, org_id=who.org_id))
    session.flush()
    audit.record(
        session,
        who.actor,
        "gallery.create",
        object_type="gallery",
        object_id=gallery.id,
        detail={"name": gallery.name},
    )


def owner_of(session: Session, gallery_id: int) -> int | None:
    row = session.get(GalleryOwner, gallery_id)
    return row.org_id if row else None


def case(session: Session, who: Principal, case_id: int) -> CaseFile:
    row = session.get(CaseFile, case_id)
    if row is None or row.org_id != who.org_id:
        raise NotFoundError(f"case {case_id} does not exist")
    return row

"""The audit trail: an append-only log whose entries are chained by SHA-256.

Each entry's hash covers its own fields and the previous entry's hash; ``audit_head``
holds the tip. ``verify`` recomputes the chain and names the first entry that was edited,
deleted or moved, and notices a log cut short at its end. The database refuses UPDATE
and DELETE on the log (triggers, migration 0003), so changing it takes a deliberate act,
and the chain still shows it.

Appends take the head row's lock first (``SELECT ... FOR UPDATE`` on PostgreSQL; the
service's write transactions on SQLite hold the database's write lock from their first
statement), so concurrent requests append one after another, never forking the chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facetrace.service.tables import AuditEntry, AuditHead

GENESIS = "0" * 64
HASHED_FIELDS = (
    "seq",
    "at",
    "user_id",
    "username",
    "org_id",
    "action",
    "case_id",
    "object_type",
    "object_id",
    "detail",
    "prev_hash",
)


@dataclass(frozen=True)
class Actor:
    """Who did it: a signed-in user, or an anonymous caller (a failed login)."""

    user_id: int | None = None
    username: str | None = None
    org_id: int | None = None


def entry_hash(fields: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of an entry's hashed fields."""
    body = json.dumps({k: fields[k] for k in HASHED_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _head(session: Session) -> AuditHead:
    head = session.execute(
        select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
        session.flush()
    return head


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    case_id: int | None = None,
    object_type: str | None = None,
    object_id: Any = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction (it commits with the action)."""
    head = _head(session)
    fields: dict[str, Any] = {
        "seq": head.seq + 1,
        "at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "user_id": actor.user_id,
        "username": actor.username,
        "org_id": actor.org_id,
        "action": action,
        "case_id": case_id,
        "object_type": object_type,
        "object_id": None if object_id is None else str(object_id),
        "detail": json.dumps(detail or {}, sort_keys=True, default=str),
        "prev_hash": head.hash,
    }
    entry = AuditEntry(**fields, hash=entry_hash(fields))
    session.add(entry)
    head.seq, head.hash = entry.seq, entry.hash
    session.flush()
    return entry


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    first_bad: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "first_bad_seq": self.first_bad,
            "reason": self.reason,
        }


def verify(session: Session, batch: int = 5000) -> Verdict:
    """Walk the whole chain in order; the first broken link is named."""
    prev, expected, count, last_id = GENESIS, 1, 0, 0
    while True:
        rows = (
            session.execute(
                select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id)
            )
            .scalars()
            .fetchmany(batch)
        )
        if not rows:
            break
        for row in rows:
            fields = {k: getattr(row, k) for k in HASHED_FIELDS}
            if row.seq != expected:
                why = f"entry {expected} is missing or out of order (found {row.seq} in its place)"
                return Verdict(False, count, expected, why)
            if row.prev_hash != prev:
                why = "its link to the entry before does not match (deleted or reordered)"
                return Verdict(False, count, row.seq, why)
            if entry_hash(fields) != row.hash:
                return Verdict(False, count, row.seq, "its content was edited after it was written")
            prev, expected, count, last_id = row.hash, expected + 1, count + 1, row.id
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq != count or head.hash != prev):
        why = f"the log ends at entry {count} but its head records entry {head.seq}: cut short"
        return Verdict(False, count, count + 1, why)
    return Verdict(True, count)


def entries(
    session: Session,
    org_id: int,
    *,
    user_id: int | None = None,
    case_id: int | None = None,
    action: str | None = None,
    since: date | None = None,
    until: date | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """An organisation's entries, newest first, filtered."""
    q = select(AuditEntry).where(AuditEntry.org_id == org_id)
    if user_id is not None:
        q = q.where(AuditEntry.user_id == user_id)
    if case_id is not None:
        q = q.where(AuditEntry.case_id == case_id)
    if action:
        q = q.where(AuditEntry.action == action)
    if since:
        q = q.where(AuditEntry.at >= since.isoformat())
    if until:
        q = q.where(AuditEntry.at < (until + timedelta(days=1)).isoformat())
    rows = session.execute(q.order_by(AuditEntry.seq.desc()).limit(limit)).scalars()
    return [
        {
            "seq": r.seq,
            "at": r.at,
            "user": r.username,
            "user_id": r.user_id,
            "action": r.action,
            "case_id": r.case_id,
            "object": f"{r.object_type}:{r.object_id}" if r.object_type else None,
            "detail": json.loads(r.detail),
        }
        for r in rows
    ]


def searches_per_day(session: Session, org_id: int, days: int = 30) -> list[tuple[str, int]]:
    """(day, searches) for the last ``days`` days, zeros included."""
    start = datetime.now(UTC).date() - timedelta(days=days - 1)
    day = func.substr(AuditEntry.at, 1, 10)
    rows = session.execute(
        select(day, func.count())
        .where(AuditEntry.org_id == org_id, AuditEntry.action == "search")
        .where(AuditEntry.at >= start.isoformat())
        .group_by(day)
    ).all()
    counts = {d: n for d, n in rows}
    out = []
    for i in range(days):
        d = (start + timedelta(days=i)).isoformat()
        out.append((d, int(counts.get(d, 0))))
    return out

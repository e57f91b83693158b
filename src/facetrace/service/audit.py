"""The audit trail: an append-only log whose entries are chained by HMAC-SHA-256.

Each entry's hash is an HMAC, under a key kept outside the database (``DATA/audit.key``,
made on the first entry, mode 0600), of its own fields and the previous entry's hash;
``audit_head`` holds the tip. ``verify`` recomputes the chain and names the first entry
that was edited, deleted or moved, and notices a log cut short at its end. Someone who
can write the database but does not hold the key cannot forge a consistent chain. The
database refuses UPDATE and DELETE on the log and DELETE of its head (triggers, migration
0003), so changing it takes a deliberate act, and the chain still shows it.

Appends run in write transactions that hold the head row's lock from their first
statement (``facetrace.service.uow``), so concurrent requests append one after another,
never forking the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facetrace.errors import AuditChainError, ConfigError
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


KEY_INFO = "audit_key_file"  # Session.info entry naming the key file
_keys: dict[Path, bytes] = {}


def entry_hash(fields: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA-256 over the canonical JSON of an entry's hashed fields."""
    body = json.dumps({k: fields[k] for k in HASHED_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def key_for(session: Session, *, create: bool) -> bytes:
    """The chain's key, from the file ``Session.info`` names (made when ``create``)."""
    name = session.info.get(KEY_INFO)
    if name is None:
        raise ConfigError("the audit log needs its key file: open the database through Facetrace")
    path = Path(name)
    if path in _keys:
        return _keys[path]
    if not path.is_file():
        if not create:
            raise AuditChainError(
                f"{path}: the audit key is missing; restore it from your backup to verify"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        except FileExistsError:
            pass
    text = path.read_text().strip()
    if len(text) != 64:
        raise AuditChainError(f"{path}: not an audit key (64 hex digits expected)")
    _keys[path] = bytes.fromhex(text)
    return _keys[path]


def _head(session: Session) -> AuditHead:
    head = session.execute(
        select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one_or_none()
    if head is None:
        raise AuditChainError("the audit log's head row is missing: the log was tampered with")
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
    key = key_for(session, create=head.seq == 0)
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
    entry = AuditEntry(**fields, hash=entry_hash(fields, key))
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
    """Walk the chain up to the head in order; the first broken link is named.

    The head is read first: entries appended while the walk runs lie beyond it and are
    left for the next check.
    """
    head = session.get(AuditHead, 1)
    first = session.execute(select(func.min(AuditEntry.seq))).scalar()
    if head is None:
        return Verdict(False, 0, 1, "the log's head row is missing (deleted by hand)")
    if head.seq == 0 and first is None:
        return Verdict(True, 0)
    key = key_for(session, create=False)
    prev, expected, count, last_id = GENESIS, 1, 0, 0
    while True:
        rows = (
            session.execute(
                select(AuditEntry)
                .where(AuditEntry.id > last_id, AuditEntry.seq <= head.seq)
                .order_by(AuditEntry.id)
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
            if not hmac.compare_digest(entry_hash(fields, key), row.hash):
                return Verdict(False, count, row.seq, "its content was edited after it was written")
            prev, expected, count, last_id = row.hash, expected + 1, count + 1, row.id
    if head.seq != count or head.hash != prev:
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
    if until and until < date.max:
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

"""Units of work: one transaction per request, with the audit entry inside it.

``write`` opens a session whose first statement takes the lock every write transaction
shares: SQLite's write lock, or on PostgreSQL the audit head row (``SELECT ... FOR
UPDATE``). Writes therefore run one at a time and each sees what the one before it
committed: the audit chain never forks, and checks such as "has a second person already
decided" or a failed-login count cannot race.

When the work raises one of ``keep_on`` (a failed login), what was written, the audit
entry, is committed before the error goes on; any other error rolls back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from facetrace.errors import AuthError, FacetraceError, RateLimitError


@contextmanager
def write(
    sessions: sessionmaker,
    keep_on: tuple[type[FacetraceError], ...] = (AuthError, RateLimitError),
) -> Iterator[Session]:
    with sessions() as session:
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text("UPDATE audit_head SET seq = seq WHERE 0"))
        else:
            session.execute(text("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE"))
        try:
            yield session
        except keep_on:
            session.commit()
            raise
        except BaseException:
            session.rollback()
            raise
        session.commit()


@contextmanager
def read(sessions: sessionmaker) -> Iterator[Session]:
    with sessions() as session:
        yield session

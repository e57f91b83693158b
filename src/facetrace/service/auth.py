"""Who is asking: organisations and users, passwords, browser sessions and API tokens.

Passwords are hashed with Argon2id (argon2-cffi's defaults). Session cookies and API
tokens are random secrets shown once; the database keeps only their SHA-256, so a copy
of the database cannot be used to sign in. Five wrong passwords in a row lock an account
for 15 minutes, and each address may try 10 logins a minute; both are audited.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrace.errors import AuthError, ConflictError, RateLimitError, RequestError
from facetrace.service import audit
from facetrace.service.tables import ROLES, ApiToken, Organisation, User, WebSession

MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
# One answer for every refusal, so that it tells nobody which accounts exist or are locked.
REFUSED = "wrong username or password, or the account is locked for 15 minutes after 5 failures"
SESSION_LIFETIME = timedelta(hours=12)
TOKEN_PREFIX = "ft_"
MIN_PASSWORD = 10
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_hasher = PasswordHasher()
# One dummy hash, verified when the user does not exist, so timing does not tell.
_DUMMY = _hasher.hash("not a password of anyone's")


@dataclass(frozen=True)
class Principal:
    """A signed-in user, as every permission check sees them."""

    user_id: int
    username: str
    display_name: str
    org_id: int
    org_name: str
    role: str
    via: str = "session"
    csrf: str | None = None
    session_id: int | None = None

    @property
    def actor(self) -> audit.Actor:
        return audit.Actor(self.user_id, self.username, self.org_id)


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_org(session: Session, name: str, actor: audit.Actor | None = None) -> Organisation:
    name = name.strip()
    if not name or len(name) > 200:
        raise RequestError("organisation name must be 1 to 200 characters")
    if session.execute(select(Organisation).where(Organisation.name == name)).scalar():
        raise ConflictError(f"organisation {name!r} already exists")
    org = Organisation(name=name)
    session.add(org)
    session.flush()
    audit.record(
        session,
        actor or audit.Actor(),
        "org.create",
        object_type="organisation",
        object_id=org.id,
        detail={"name": name},
    )
    return org


def get_org(session: Session, name: str) -> Organisation:
    from facetrace.errors import NotFoundError

    org = session.execute(select(Organisation).where(Organisation.name == name)).scalar()
    if org is None:
        raise NotFoundError(f"organisation {name!r} does not exist")
    return org


def create_user(
    session: Session,
    org: Organisation,
    username: str,
    password: str,
    role: str,
    display_name: str | None = None,
    actor: audit.Actor | None = None,
) -> User:
    username = username.strip().lower()
    if not _USERNAME.match(username):
        raise RequestError(
            f"username {username!r}: 2-64 characters, lower-case letters, digits, . _ -"
        )
    if role not in ROLES:
        raise RequestError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise RequestError(f"password must be at least {MIN_PASSWORD} characters")
    if session.execute(select(User).where(User.username == username)).scalar():
        raise ConflictError(f"user {username!r} already exists")
    user = User(
        org_id=org.id,
        username=username,
        display_name=(display_name or username).strip()[:200],
        role=role,
        password_hash=_hasher.hash(password),
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor or audit.Actor(org_id=org.id),
        "user.create",
        object_type="user",
        object_id=user.id,
        detail={"username": username, "role": role, "org": org.name},
    )
    return user


def principal_for(
    session: Session,
    user: User,
    via: str = "session",
    csrf: str | None = None,
    session_id: int | None = None,
) -> Principal:
    org = session.get(Organisation, user.org_id)
    assert org is not None
    return Principal(
        user.id, user.username, user.display_name, org.id, org.name, user.role,
        via, csrf, session_id,
    )  # fmt: skip


class LoginLimiter:
    """At most ``per_minute`` login attempts per client address (in this process)."""

    def __init__(self, per_minute: int = 10) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        t = time.monotonic()
        with self._lock:
            seen = self._seen[address]
            while seen and seen[0] < t - 60:
                seen.popleft()
            if len(seen) >= self.per_minute:
                wait = int(60 - (t - seen[0])) + 1
                raise RateLimitError(f"too many login attempts; try again in {wait} s")
            seen.append(t)


def limit_login(session: Session, limiter: LoginLimiter, username: str, address: str) -> None:
    """The per-address rate limit of sign-ins; a refusal is audited (in ``session``)."""
    try:
        limiter.check(address)
    except RateLimitError:
        who = audit.Actor(username=(username or "").strip().lower()[:100] or None)
        audit.record(session, who, "login.rate_limited", detail={"address": address})
        raise


def authenticate(session: Session, username: str, password: str, address: str) -> User:
    """The user if the password is right; audits and counts every failure."""
    name = (username or "").strip().lower().replace("\x00", "")
    user = session.execute(select(User).where(User.username == name)).scalar()
    anonymous = audit.Actor(username=name[:100] or None)
    if user is None:
        _verify(_DUMMY, password)
        audit.record(
            session,
            anonymous,
            "login.failed",
            detail={"address": address, "reason": "unknown user"},
        )
        raise AuthError(REFUSED)
    actor = audit.Actor(user.id, user.username, user.org_id)
    locked = aware(user.locked_until)
    if locked and locked <= now():  # the lock-out is over: a fresh count
        user.failed_logins, user.locked_until, locked = 0, None, None
    right = _verify(user.password_hash, password)  # always paid: timing tells nothing
    if locked:
        audit.record(
            session, actor, "login.failed", detail={"address": address, "reason": "locked"}
        )
        raise AuthError(REFUSED)
    if not user.active or not right:
        user.failed_logins += 1
        reason = "inactive" if not user.active else "wrong password"
        if user.failed_logins >= MAX_FAILURES:
            user.locked_until = now() + LOCKOUT
            audit.record(
                session,
                actor,
                "user.locked",
                object_type="user",
                object_id=user.id,
                detail={"address": address, "failures": user.failed_logins},
            )
        audit.record(session, actor, "login.failed", detail={"address": address, "reason": reason})
        raise AuthError(REFUSED)
    user.failed_logins, user.locked_until = 0, None
    return user


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password or "")
    except (VerificationError, InvalidHashError):
        return False


def start_session(session: Session, user: User, address: str) -> tuple[str, Principal]:
    """A new browser session: (the cookie's secret, who it is)."""
    secret = secrets.token_urlsafe(32)
    row = WebSession(
        user_id=user.id,
        token_hash=digest(secret),
        csrf_token=secrets.token_urlsafe(24),
        expires_at=now() + SESSION_LIFETIME,
    )
    session.add(row)
    session.flush()
    who = principal_for(session, user, csrf=row.csrf_token, session_id=row.id)
    audit.record(session, who.actor, "login", detail={"address": address, "via": "password"})
    return secret, who


def from_session(session: Session, secret: str | None) -> Principal:
    if not secret:
        raise AuthError("not signed in")
    row = session.execute(
        select(WebSession).where(WebSession.token_hash == digest(secret))
    ).scalar()
    expires = aware(row.expires_at) if row else None
    if row is None or row.ended_at is not None or expires is None or expires < now():
        raise AuthError("your session has ended; sign in again")
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise AuthError("this account is disabled")
    return principal_for(session, user, csrf=row.csrf_token, session_id=row.id)


def end_session(session: Session, who: Principal) -> None:
    if who.session_id is not None:
        row = session.get(WebSession, who.session_id)
        if row is not None:
            row.ended_at = now()
    audit.record(session, who.actor, "logout")


def issue_token(
    session: Session, user: User, name: str, days: int | None = 90
) -> tuple[str, ApiToken]:
    """A new API token for ``user``: (the secret, shown once; its row)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        name=(name or "api")[:200],
        token_hash=digest(secret),
        prefix=secret[:10],
        expires_at=now() + timedelta(days=days) if days else None,
    )
    session.add(row)
    session.flush()
    actor = audit.Actor(user.id, user.username, user.org_id)
    audit.record(
        session,
        actor,
        "token.create",
        object_type="token",
        object_id=row.id,
        detail={"name": row.name, "expires_at": row.expires_at},
    )
    return secret, row


def from_token(session: Session, secret: str) -> Principal:
    row = session.execute(select(ApiToken).where(ApiToken.token_hash == digest(secret))).scalar()
    if row is None:
        raise AuthError("unknown API token")
    if row.revoked_at is not None:
        raise AuthError(f"API token {row.prefix}... was revoked")
    expires = aware(row.expires_at)
    if expires is not None and expires < now():
        raise AuthError(f"API token {row.prefix}... expired on {expires:%Y-%m-%d}")
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise AuthError("this account is disabled")
    row.last_used_at = now()
    return principal_for(session, user, via="token")


def revoke_token(session: Session, who: Principal, token_id: int) -> ApiToken:
    from facetrace.errors import NotFoundError

    row = session.get(ApiToken, token_id)
    owner = session.get(User, row.user_id) if row else None
    mine = owner is not None and owner.id == who.user_id
    org_admin = owner is not None and owner.org_id == who.org_id and who.role == "admin"
    if row is None or not (mine or org_admin):
        raise NotFoundError(f"token {token_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = now()
        audit.record(session, who.actor, "token.revoke", object_type="token", object_id=row.id)
    return row

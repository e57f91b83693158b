"""The audit trail: append-only in the database, and a hash chain that shows any change.

On SQLite and PostgreSQL: the database refuses UPDATE and DELETE on the log; with the
refusal removed by hand, ``verify`` (and ``facetrace audit verify``) names the first
entry that was edited, deleted, reordered, or cut from the end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from facetrace.service import audit, auth, uow
from facetrace.settings import Settings
from tests.conftest import run_cli
from tests.service.conftest import PASSWORD, World


def some_entries(w: World) -> None:
    with uow.write(w.service.sessions) as s:
        org = auth.get_org(s, "north agency")
        for i in range(4):
            auth.create_user(s, org, f"extra{i}", PASSWORD, "viewer")


def unprotect(s, dialect: str) -> None:  # type: ignore[no-untyped-def]
    if dialect == "sqlite":
        s.execute(text("DROP TRIGGER audit_log_no_update"))
        s.execute(text("DROP TRIGGER audit_log_no_delete"))
    else:
        s.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))


def test_the_log_refuses_edits_and_deletes(world: World) -> None:
    some_entries(world)
    for sql in ("UPDATE audit_log SET action = 'nothing'", "DELETE FROM audit_log"):
        with world.service.sessions() as s, pytest.raises(DBAPIError, match="append-only"):
            s.execute(text(sql))
    with world.service.sessions() as s:
        assert audit.verify(s).ok


TAMPERING: dict[str, tuple[Callable[[int], list[str]], str]] = {
    "edited": (
        lambda n: [f"UPDATE audit_log SET detail = '{{}}' WHERE seq = {n - 3}"],
        "edited",
    ),
    "deleted": (lambda n: [f"DELETE FROM audit_log WHERE seq = {n - 3}"], "missing"),
    "reordered": (
        lambda n: [
            f"UPDATE audit_log SET seq = -1 WHERE seq = {n - 3}",
            f"UPDATE audit_log SET seq = {n - 3} WHERE seq = {n - 2}",
            f"UPDATE audit_log SET seq = {n - 2} WHERE seq = -1",
        ],
        "",
    ),
    "cut short": (lambda n: [f"DELETE FROM audit_log WHERE seq = {n}"], "cut short"),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_verify_names_the_first_bad_entry(world: World, how: str) -> None:
    some_entries(world)
    sessions = world.service.sessions
    with sessions() as s:
        n = audit.verify(s).entries
        dialect = s.get_bind().dialect.name
    statements, reason = TAMPERING[how]
    with sessions.begin() as s:
        unprotect(s, dialect)
        for sql in statements(n):
            s.execute(text(sql))
    with sessions() as s:
        verdict = audit.verify(s)
    assert not verdict.ok and reason in (verdict.reason or "")
    assert verdict.first_bad == (n if how == "cut short" else n - 3)
    assert verdict.entries == verdict.first_bad - 1


def test_cli_verify_exit_code(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, _, err = run_cli("--data", str(data), "admin", "create-org", "West")
    assert code == 0, err
    code, _, err = run_cli(
        "--data", str(data), "admin", "create-user", "West", "wanda", "--role", "admin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = run_cli("--data", str(data), "audit", "verify")
    assert code == 0 and "2 entries" in out
    from facetrace.db import open_database

    sessions = open_database(Settings.load(env={}, data_dir=data).db_url)
    with sessions.begin() as s:
        unprotect(s, "sqlite")
        s.execute(text("UPDATE audit_log SET username = 'someone else' WHERE seq = 2"))
    sessions.kw["bind"].dispose()
    code, _, err = run_cli("--data", str(data), "audit", "verify")
    assert code == 8 and "entry 2" in err and "edited" in err

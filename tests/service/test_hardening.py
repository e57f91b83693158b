"""Findings of the service's security review, each pinned by a test.

Blind review (administrators cannot decide; an undecided reviewer sees neither notes nor
a telling status), a keyed audit chain (a forger without the key is caught; the head row
is protected), writes that cannot race (two reviewers at once still confirm), odd inputs
that once gave a 500, bodies over the limit without a Content-Length, and refusals on
pages and rate-limited API sign-ins that reach the audit log.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from facetrace.service import audit, uow
from facetrace.service.tables import AuditEntry, Identification
from tests.service.conftest import PASSWORD, World, add_gallery
from tests.service.test_audit import some_entries, unprotect


def searched(w: World, faces_dir: Path) -> tuple[str, dict]:
    """A stored search of a real probe; (its reviews URL, its top candidate)."""
    probes = add_gallery(w.service, faces_dir)
    c, h = w.client, w.h("north", "examiner")
    cid = c.post("/api/v1/cases", json={"number": "H-1", "purpose": "dead"}, headers=h).json()["id"]
    photo = probes["Adrien_Brody"]
    files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
    pid = c.post(f"/api/v1/cases/{cid}/probes", files=files, headers=h).json()["id"]
    run = c.post(f"/api/v1/cases/{cid}/searches", json={"probe_id": pid, "k": 2}, headers=h)
    return f"/api/v1/searches/{run.json()['id']}/reviews", run.json()["result"]["faces"][0][
        "candidates"
    ][0]


def test_review_is_blind_for_everyone_who_has_not_decided(world: World, faces_dir: Path) -> None:
    url, top = searched(world, faces_dir)
    c = world.client
    one = {"face_index": 0, "candidate_face_id": top["face_id"]}
    c.post(
        url,
        json={**one, "outcome": "potential candidate", "note": "a scar"},
        headers=world.h("north", "examiner"),
    )
    c.post(
        url,
        json={**one, "outcome": "no candidate", "note": "different nose"},
        headers=world.h("north", "reviewer"),
    )
    for role in ("admin", "reviewer2", "viewer"):
        seen = c.get(url, headers=world.h("north", role)).json()[0]
        assert seen["status"] == "under review" and seen["decisions"] == [], role
        assert seen["decisions_recorded"] == 2
    assert "scar" not in c.get(url.removesuffix("/reviews"), headers=world.h("north", "admin")).text
    r = c.post(
        url, json={**one, "outcome": "potential candidate"}, headers=world.h("north", "admin")
    )
    assert r.status_code == 403


def test_two_reviewers_at_once_still_confirm(world: World, faces_dir: Path) -> None:
    url, top = searched(world, faces_dir)
    body = {"face_index": 0, "candidate_face_id": top["face_id"], "outcome": "potential candidate"}
    start = threading.Barrier(2)
    codes: list[int] = []

    def decide(role: str) -> None:
        start.wait()
        codes.append(world.client.post(url, json=body, headers=world.h("north", role)).status_code)

    threads = [threading.Thread(target=decide, args=(r,)) for r in ("examiner", "reviewer")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [201, 201]
    with world.service.sessions() as s:
        assert len(s.execute(select(Identification)).scalars().all()) == 1


def test_a_forger_without_the_key_is_caught(world: World) -> None:
    some_entries(world)
    sessions = world.service.sessions
    with sessions() as s:
        n = audit.verify(s).entries
        dialect = s.get_bind().dialect.name
    # Edit entry n-2, then recompute every hash from there with plain SHA-256 (no key).
    with sessions.begin() as s:
        unprotect(s, dialect)
        rows = s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars().all()
        prev = rows[n - 4].hash
        for row in rows[n - 3 :]:
            fields = {k: getattr(row, k) for k in audit.HASHED_FIELDS}
            if row.seq == n - 2:
                fields["detail"] = json.dumps({"forged": True})
            fields["prev_hash"] = prev
            body = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
            prev = hashlib.sha256(body).hexdigest()
            s.execute(
                text("UPDATE audit_log SET detail = :d, prev_hash = :p, hash = :h WHERE id = :i"),
                {"d": fields["detail"], "p": fields["prev_hash"], "h": prev, "i": row.id},
            )
        s.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})
    with sessions() as s:
        verdict = audit.verify(s)
    assert not verdict.ok and verdict.first_bad == n - 2


def test_the_head_row_cannot_be_deleted_and_a_missing_key_is_named(world: World) -> None:
    some_entries(world)
    with world.service.sessions() as s, pytest.raises(DBAPIError, match="cannot be deleted"):
        s.execute(text("DELETE FROM audit_head"))
    key_file = Path(world.service.sessions.kw["info"]["audit_key_file"])
    assert key_file.stat().st_mode & 0o777 == 0o600
    audit._keys.clear()
    key_file.rename(key_file.with_suffix(".moved"))
    with world.service.sessions() as s, pytest.raises(Exception, match="audit key is missing"):
        audit.verify(s)
    key_file.with_suffix(".moved").rename(key_file)


def test_inputs_that_once_gave_500(world: World) -> None:
    c, h = world.client, world.h("north", "admin")
    huge = "9" * 30
    for path in (
        f"/api/v1/cases/{huge}",
        f"/api/v1/searches/{huge}",
        f"/api/v1/jobs/{huge}",
        f"/api/v1/faces/{huge}/crop",
        f"/api/v1/audit?case_id={huge}",
        f"/api/v1/probes/1/crop?box=1,2,{'9' * 400},4",
    ):
        assert c.get(path, headers=h).status_code == 422, path
    assert c.get("/api/v1/audit?until=9999-12-31", headers=h).status_code == 200
    r = c.post("/api/v1/cases", json={"number": "A\x00B", "purpose": "dead"}, headers=h)
    assert r.status_code == 422 and "NUL" in r.text
    r = c.post("/api/v1/tokens", json={"username": "x\x00", "password": "y"})
    assert r.status_code == 422
    page = c.get(f"/cases/{huge}", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code in (303, 422)


def test_chunked_body_over_the_limit_is_413(tmp_path: Path) -> None:
    from tests.service.conftest import make_world

    with make_world(tmp_path / "data", upload_limit=10_000) as w:

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(40):
                yield b"x" * 8192

        r = w.client.post(
            "/api/v1/cases/1/probes",
            content=chunks(),
            headers={**w.h("north", "examiner"), "content-type": "multipart/form-data; boundary=b"},
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_refusals_reach_the_audit_log(world: World) -> None:
    c = world.client
    for _ in range(12):
        c.post("/api/v1/tokens", json={"username": "north-viewer", "password": "wrong guess!"})
    with uow.read(world.service.sessions) as s:
        actions = list(s.execute(select(AuditEntry.action)).scalars())
    assert actions.count("login.rate_limited") >= 1
    # A page refusal (a form posted without its CSRF token) is audited as the API's are.
    with uow.write(world.service.sessions) as s:
        from facetrace.service import auth

        user = auth.authenticate(s, "north-examiner", PASSWORD, "test")
        secret, _ = auth.start_session(s, user, "test")
    c.cookies.set("facetrace_session", secret)
    page = c.post(
        "/cases", data={"number": "P-1", "purpose": "dead"}, headers={"accept": "text/html"}
    )
    assert page.status_code == 403 and "text/html" in page.headers["content-type"]
    with uow.read(world.service.sessions) as s:
        refused = s.execute(
            select(AuditEntry.detail).where(AuditEntry.action == "request.refused")
        ).scalars()
        assert any(json.loads(d)["path"] == "/cases" for d in refused)


def test_every_response_carries_the_security_headers(world: World) -> None:
    r = world.client.get("/api/v1/me", headers=world.h("north", "viewer"))
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_anonymous_uploads_are_refused_before_their_body_is_read(world: World) -> None:
    c = world.client
    files = {"file": ("p.jpg", b"\xff\xd8" + b"0" * 50_000, "image/jpeg")}
    for headers in ({}, {"Authorization": "Bearer ft_not_a_token"}):
        r = c.post("/api/v1/cases/1/probes", files=files, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    page = c.post(
        "/cases/1/search", files=files, headers={"accept": "text/html"}, follow_redirects=False
    )
    assert page.status_code == 303 and page.headers["location"] == "/login"

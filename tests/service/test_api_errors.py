"""Bad input and abuse: every refusal is clear, has the one JSON shape, and writes nothing
but its audit entry.

Unknown, revoked and expired tokens (401), brute-force logins (lock-out after five
failures, then a rate limit per address: 429), oversized uploads (413), files that are not
images and bodies of the wrong media type (415), malformed JSON and invalid fields (422),
and a cookie session without its CSRF token (403).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from facetrace.service import auth, uow
from facetrace.service.server import COOKIE
from facetrace.service.tables import ApiToken, AuditEntry, CaseFile, Probe
from tests.service.conftest import PASSWORD, World, make_world


def error_of(r) -> dict:  # type: ignore[no-untyped-def]
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["status"] == r.status_code and body["error"]["message"]
    return body["error"]


def count(w: World, table) -> int:  # type: ignore[no-untyped-def]
    with w.service.sessions() as s:
        return int(s.execute(select(func.count()).select_from(table)).scalar_one())


def test_tokens_unknown_revoked_expired(world: World) -> None:
    c = world.client
    assert error_of(c.get("/api/v1/me"))["code"] == "unauthorized"
    assert c.get("/api/v1/me", headers={"Authorization": "Basic abc"}).status_code == 401
    assert c.get("/api/v1/me", headers={"Authorization": "Bearer ft_nope"}).status_code == 401
    made = c.post(
        "/api/v1/tokens", json={"username": "north-viewer", "password": PASSWORD, "name": "t"}
    )
    assert made.status_code == 201
    mine = {"Authorization": f"Bearer {made.json()['token']}"}
    assert c.get("/api/v1/me", headers=mine).json()["username"] == "north-viewer"
    assert c.delete(f"/api/v1/tokens/{made.json()['id']}", headers=mine).status_code == 200
    r = c.get("/api/v1/me", headers=mine)
    assert r.status_code == 401 and "revoked" in error_of(r)["message"]
    # Someone else's token cannot be revoked by a non-administrator: not found.
    theirs = c.delete(f"/api/v1/tokens/{made.json()['id']}", headers=world.h("south", "admin"))
    assert theirs.status_code == 404
    with uow.write(world.service.sessions) as s:
        for row in s.execute(select(ApiToken)).scalars():
            row.expires_at = auth.now() - timedelta(days=1)
    r = c.get("/api/v1/me", headers=world.h("north", "admin"))
    assert r.status_code == 401 and "expired" in error_of(r)["message"]
    with world.service.sessions() as s:
        hashes = set(s.execute(select(ApiToken.token_hash)).scalars())
    assert made.json()["token"] not in hashes and len(next(iter(hashes))) == 64


def test_brute_force_locks_the_account_then_rate_limits(world: World) -> None:
    c = world.client
    wrong = {"username": "north-examiner", "password": "guess guess guess"}
    codes = [c.post("/api/v1/tokens", json=wrong).status_code for _ in range(5)]
    assert codes == [401] * 5
    right = c.post("/api/v1/tokens", json={**wrong, "password": PASSWORD})
    assert right.status_code == 401 and "locked" in error_of(right)["message"]
    more = [c.post("/api/v1/tokens", json=wrong).status_code for _ in range(5)]
    assert (
        more[-1] == 429 and "try again" in error_of(c.post("/api/v1/tokens", json=wrong))["message"]
    )
    with world.service.sessions() as s:
        actions = list(s.execute(select(AuditEntry.action)).scalars())
    assert actions.count("user.locked") == 1 and actions.count("login.failed") >= 9


def test_uploads_too_large_or_not_images(tmp_path: Path) -> None:
    with make_world(tmp_path / "data", upload_limit=20_000) as w:
        c, h = w.client, w.h("north", "examiner")
        cid = c.post("/api/v1/cases", json={"number": "U-1", "purpose": "dead"}, headers=h)
        url = f"/api/v1/cases/{cid.json()['id']}/probes"
        before = count(w, AuditEntry)
        big = c.post(url, files={"file": ("big.jpg", b"\xff\xd8" + b"0" * 200_000)}, headers=h)
        assert big.status_code == 413 and error_of(big)["code"] == "payload_too_large"
        text = c.post(url, files={"file": ("notes.txt", b"just some words here")}, headers=h)
        assert text.status_code == 415 and "notes.txt" in error_of(text)["message"]
        empty = c.post(url, files={"file": ("empty.jpg", b"")}, headers=h)
        assert empty.status_code == 422 and "empty" in error_of(empty)["message"]
        cut = c.post(url, files={"file": ("cut.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF")}, headers=h)
        assert cut.status_code in (415, 422)
        assert count(w, Probe) == 0
        with w.service.sessions() as s:
            refused = s.execute(select(AuditEntry.action).where(AuditEntry.seq > before)).scalars()
            assert set(refused) == {"request.refused"}


def test_malformed_bodies(world: World) -> None:
    c, h = world.client, world.h("north", "examiner")
    r = c.post(
        "/api/v1/cases", content=b'{"number": ', headers={**h, "content-type": "application/json"}
    )
    assert r.status_code == 422 and "not valid JSON" in error_of(r)["message"]
    r = c.post(
        "/api/v1/cases",
        content=b"number=1",
        headers={**h, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415
    r = c.post("/api/v1/cases", json={"number": "A", "purpose": "dead", "admin": True}, headers=h)
    assert r.status_code == 422 and "admin" in error_of(r)["message"]
    r = c.post("/api/v1/cases", json={"number": "A", "purpose": "curiosity"}, headers=h)
    assert r.status_code == 422
    r = c.post("/api/v1/cases", json={"number": "A", "purpose": "other"}, headers=h)
    assert r.status_code == 422 and "other" in error_of(r)["message"]
    assert c.post("/api/v1/cases/1/probes", json={"file": "x"}, headers=h).status_code == 415
    assert error_of(c.get("/api/v1/nothing-here", headers=h))["code"] == "not_found"
    assert c.get("/api/v1/cases/abc", headers=h).status_code == 422
    assert count(world, CaseFile) == 0


def test_cookie_sessions_need_the_csrf_token(world: World) -> None:
    with uow.write(world.service.sessions) as s:
        user = auth.authenticate(s, "north-examiner", PASSWORD, "test")
        secret, who = auth.start_session(s, user, "test")
    c = world.client
    c.cookies.set(COOKIE, secret)
    assert c.get("/api/v1/me").json()["username"] == "north-examiner"
    body = {"number": "C-9", "purpose": "dead"}
    r = c.post("/api/v1/cases", json=body)
    assert r.status_code == 403 and "CSRF" in error_of(r)["message"]
    assert count(world, CaseFile) == 0
    r = c.post("/api/v1/cases", json=body, headers={"X-CSRF-Token": who.csrf or ""})
    assert r.status_code == 201


def test_path_tricks_in_an_archive_are_refused_member_by_member(
    world: World, faces_dir: Path, tmp_path: Path
) -> None:
    import io
    import zipfile

    photo = next((faces_dir / "lfw" / "images" / "Adrien_Brody").glob("*.jpg"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Adrien_Brody/good.jpg", photo.read_bytes())
        z.writestr("../../escaped.jpg", photo.read_bytes())
        z.writestr("/etc/absolute.jpg", photo.read_bytes())
    c = world.client
    r = c.post(
        "/api/v1/galleries/tricks/ingest",
        files={"file": ("tricks.zip", buf.getvalue(), "application/zip")},
        headers=world.h("north", "admin"),
    )
    assert r.status_code == 202, r.text
    job = world.service.jobs.wait(r.json()["id"], timeout=120)
    assert job["status"] == "done", job
    polled = c.get(f"/api/v1/jobs/{job['id']}", headers=world.h("north", "viewer")).json()
    assert polled["percent"] == 100
    subjects = c.get("/api/v1/galleries/tricks/subjects", headers=world.h("north", "viewer"))
    assert [s["name"] for s in subjects.json()] == ["Adrien_Brody"]
    with world.service.sessions() as s:
        from facetrace.db import IngestFailure

        reasons = [f.reason for f in s.execute(select(IngestFailure)).scalars()]
    assert len(reasons) == 2 and all("unsafe path" in x for x in reasons)
    assert not list(tmp_path.rglob("escaped.jpg")) and not list(tmp_path.rglob("absolute.jpg"))

"""Every REST endpoint against every role, and against a foreign organisation.

North owns a case, a probe, a stored search and a gallery of real faces. Each north
user may do exactly what their role allows (403 otherwise); no south user ever gets a
north object (404, never a 2xx), whatever their role.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from facetrace.service.access import PERMISSIONS
from facetrace.service.tables import ROLES
from tests.service.conftest import World, add_gallery

ROLE_DENIED = 403


def jpeg(size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (120, 90, 60)).save(buf, "JPEG")
    return buf.getvalue()


def zip_of(photo: Path) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"Someone/{photo.name}", photo.read_bytes())
    return buf.getvalue()


@pytest.fixture()
def north(world: World, faces_dir: Path) -> dict[str, Any]:
    """North's objects: a gallery of real faces, a case with a probe and a stored search."""
    probes = add_gallery(world.service, faces_dir)
    c, h = world.client, world.h("north", "examiner")
    case = c.post("/api/v1/cases", json={"number": "N-1", "purpose": "dead"}, headers=h).json()
    probe_path = probes["Adrien_Brody"]
    files = {"file": (probe_path.name, probe_path.read_bytes(), "image/jpeg")}
    probe = c.post(f"/api/v1/cases/{case['id']}/probes", files=files, headers=h).json()
    search = c.post(
        f"/api/v1/cases/{case['id']}/searches", json={"probe_id": probe["id"]}, headers=h
    ).json()
    cand = search["result"]["faces"][0]["candidates"][0]
    return {
        "case": case["id"],
        "probe": probe["id"],
        "search": search["id"],
        "face": cand["face_id"],
        "gallery": "records",
        "photo": probe_path,
    }


def endpoints(o: dict[str, Any], n: int) -> list[tuple[str, str, dict[str, Any], str, bool]]:
    """(method, path, request keywords, permission, names a north object)."""
    review = {"face_index": 0, "candidate_face_id": o["face"], "outcome": "inconclusive"}
    return [
        ("GET", "/api/v1/cases", {}, "read", False),
        ("POST", "/api/v1/cases", {"json": {"number": f"X-{n}", "purpose": "missing"}},
         "case.write", False),
        ("GET", f"/api/v1/cases/{o['case']}", {}, "read", True),
        ("POST", f"/api/v1/cases/{o['case']}/probes",
         {"files": {"file": ("p.jpg", jpeg(), "image/jpeg")}}, "search", True),
        ("GET", f"/api/v1/probes/{o['probe']}/image", {}, "read", True),
        ("GET", f"/api/v1/probes/{o['probe']}/crop?box=0,0,50,50", {}, "read", True),
        ("POST", f"/api/v1/cases/{o['case']}/searches", {"json": {"probe_id": o["probe"],
         "k": 3}}, "search", True),
        ("GET", f"/api/v1/searches/{o['search']}", {}, "read", True),
        ("GET", f"/api/v1/searches/{o['search']}/reviews", {}, "read", True),
        ("POST", f"/api/v1/searches/{o['search']}/reviews", {"json": review}, "review", True),
        ("GET", "/api/v1/galleries", {}, "read", False),
        ("POST", "/api/v1/galleries", {"json": {"name": f"g-{n}"}}, "gallery.write", False),
        ("GET", f"/api/v1/galleries/{o['gallery']}/subjects", {}, "read", True),
        ("POST", f"/api/v1/galleries/{o['gallery']}/grants",
         {"json": {"organisation": "south agency"}}, "gallery.write", True),
        ("DELETE", f"/api/v1/galleries/{o['gallery']}/subjects/Aaron_Peirsol", {}, "gallery.write",
         True),
        ("POST", f"/api/v1/galleries/{o['gallery']}/ingest",
         {"files": {"file": ("a.zip", zip_of(o["photo"]), "application/zip")}},
         "gallery.write", True),
        ("GET", f"/api/v1/faces/{o['face']}/crop", {}, "read", True),
        ("GET", "/api/v1/jobs", {}, "read", False),
        ("GET", "/api/v1/users", {}, "users", False),
        ("POST", "/api/v1/users", {"json": {"username": f"new{n}", "password": "x" * 12,
         "role": "viewer"}}, "users", False),
        ("GET", "/api/v1/audit", {}, "audit", False),
        ("GET", "/api/v1/audit/verify", {}, "audit", False),
        ("GET", "/api/v1/stats", {}, "audit", False),
    ]  # fmt: skip


def test_every_endpoint_against_every_role_of_the_owner(world: World, north: dict) -> None:
    wrong = []
    for n, role in enumerate(ROLES):
        for method, path, kw, permission, _ in endpoints(north, n):
            r = world.client.request(method, path, headers=world.h("north", role), **kw)
            allowed = role in PERMISSIONS[permission]
            if (
                allowed
                and r.status_code in (401, 403, 404)
                or (not allowed and r.status_code != ROLE_DENIED)
            ):
                wrong.append((role, method, path, r.status_code, r.text[:200]))
            if r.status_code >= 400:
                assert set(r.json()) == {"error"} and r.json()["error"]["status"] == r.status_code
    assert not wrong


def test_a_foreign_organisation_never_gets_a_north_object(world: World, north: dict) -> None:
    leaks = []
    for n, role in enumerate(ROLES):
        for method, path, kw, _permission, names_north in endpoints(north, 100 + n):
            r = world.client.request(method, path, headers=world.h("south", role), **kw)
            if names_north and r.status_code not in (403, 404, 409):
                leaks.append((role, method, path, r.status_code))
            if not names_north and r.status_code < 300:
                text = r.text
                assert "N-1" not in text and "records" not in text, (role, path)
    assert not leaks
    # South's lists hold only what south made.
    listed = world.client.get("/api/v1/cases", headers=world.h("south", "admin")).json()
    assert listed and all(c["number"].startswith("X-") for c in listed)
    assert world.client.get("/api/v1/galleries", headers=world.h("south", "admin")).json() == [
        {"name": "g-100", "images": 0, "faces": 0, "subjects": 0, "failures": 0, "access": "own"}
    ]


def test_a_grant_shares_a_gallery_read_only(world: World, north: dict) -> None:
    c = world.client
    south = world.h("south", "examiner")
    assert all(g["name"] != "records" for g in c.get("/api/v1/galleries", headers=south).json())
    r = c.post(
        "/api/v1/galleries/records/grants",
        json={"organisation": "south agency"},
        headers=world.h("north", "admin"),
    )
    assert r.status_code == 201
    seen = {g["name"]: g["access"] for g in c.get("/api/v1/galleries", headers=south).json()}
    assert seen == {"records": "granted"}
    # Crops only of faces south's own searches showed: no browsing of the gallery.
    assert c.get(f"/api/v1/faces/{north['face']}/crop", headers=south).status_code == 404
    # Read-only: south's administrator cannot change it.
    r = c.delete(
        "/api/v1/galleries/records/subjects/Adrien_Brody", headers=world.h("south", "admin")
    )
    assert r.status_code == 403
    # South can search it from a case of its own, and north's case stays invisible.
    case = c.post("/api/v1/cases", json={"number": "S-1", "purpose": "missing"}, headers=south)
    files = {"file": ("p.jpg", north["photo"].read_bytes(), "image/jpeg")}
    probe = c.post(f"/api/v1/cases/{case.json()['id']}/probes", files=files, headers=south)
    run = c.post(
        f"/api/v1/cases/{case.json()['id']}/searches",
        json={"probe_id": probe.json()["id"]},
        headers=south,
    )
    assert run.status_code == 201
    assert run.json()["params"]["galleries"] == [{"name": "records", "faces": 3}]
    assert c.get(f"/api/v1/faces/{north['face']}/crop", headers=south).status_code == 200
    r = c.delete(
        "/api/v1/galleries/records/grants/south%20agency", headers=world.h("north", "admin")
    )
    assert r.status_code == 200
    assert c.get(f"/api/v1/faces/{north['face']}/crop", headers=south).status_code == 404


def test_a_probe_is_searched_only_under_its_own_case(world: World, north: dict) -> None:
    c, h = world.client, world.h("north", "examiner")
    other = c.post("/api/v1/cases", json={"number": "N-2", "purpose": "missing"}, headers=h)
    before = len(c.get(f"/api/v1/cases/{north['case']}", headers=h).json()["searches"])
    r = c.post(
        f"/api/v1/cases/{other.json()['id']}/searches",
        json={"probe_id": north["probe"]},
        headers=h,
    )
    assert r.status_code == 404
    assert f"probe {north['probe']} is not in case" in r.json()["error"]["message"]
    after = c.get(f"/api/v1/cases/{north['case']}", headers=h).json()["searches"]
    assert len(after) == before


def test_a_foreign_probe_or_search_is_missing_without_naming_its_case(
    world: World, north: dict
) -> None:
    c, south = world.client, world.h("south", "examiner")
    case = c.post("/api/v1/cases", json={"number": "S-9", "purpose": "dead"}, headers=south)
    r = c.post(
        f"/api/v1/cases/{case.json()['id']}/searches",
        json={"probe_id": north["probe"]},
        headers=south,
    )
    assert r.status_code == 404
    assert r.json()["error"]["message"] == f"probe {north['probe']} does not exist"
    r = c.get(f"/api/v1/searches/{north['search']}", headers=south)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == f"search {north['search']} does not exist"

"""Cases, a real search, and two-person confirmation, on SQLite and on PostgreSQL.

The whole path through the REST API: a case, a probe photo of a real person, a search of
a gallery holding another photo of them, then two different people confirm the candidate
independently. Neither can confirm twice, the second does not see the first's note until
deciding, and the confirmed identification links the probe face to the subject.
"""

from __future__ import annotations

from pathlib import Path

from facetrace.search import LEAD_NOTICE
from tests.service.conftest import World, add_gallery


def test_two_people_confirm_an_identification(world: World, faces_dir: Path) -> None:
    w = world
    c = w.client
    probes = add_gallery(w.service, faces_dir)
    ex, rev, rev2 = w.h("north", "examiner"), w.h("north", "reviewer"), w.h("north", "reviewer2")
    case = c.post(
        "/api/v1/cases",
        json={
            "number": "2026/17",
            "purpose": "other",
            "purpose_text": "a returned prisoner",
            "description": "photo from the exchange list",
        },
        headers=ex,
    )
    assert case.status_code == 201, case.text
    cid = case.json()["id"]
    photo = probes["Abdullah_Gul"]
    up = c.post(
        f"/api/v1/cases/{cid}/probes",
        files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
        headers=ex,
    )
    assert up.status_code == 201, up.text
    run = c.post(f"/api/v1/cases/{cid}/searches", json={"probe_id": up.json()["id"]}, headers=ex)
    assert run.status_code == 201, run.text
    body = run.json()
    assert body["notice"] == LEAD_NOTICE
    assert body["params"]["galleries"] == [{"name": "records", "faces": 3}]
    assert body["model"] and body["params"]["thresholds"]
    face = body["result"]["faces"][0]
    top = face["candidates"][0]
    assert top["subject"] == "Abdullah_Gul" and top["gallery"] == "records"
    assert top["details"]["identity_from"] == "folder"  # how the gallery knows who it is
    sid = body["id"]
    decide = f"/api/v1/searches/{sid}/reviews"

    def decision(headers: dict[str, str], outcome: str, note: str):  # type: ignore[no-untyped-def]
        return c.post(
            decide,
            json={
                "face_index": 0,
                "candidate_face_id": top["face_id"],
                "outcome": outcome,
                "note": note,
            },
            headers=headers,
        )

    first = decision(ex, "potential candidate", "same scar above the left eye")
    assert first.status_code == 201 and first.json()["status"] == "awaiting second review"
    assert decision(ex, "potential candidate", "again").status_code == 409
    # The second reviewer sees that a decision exists, not what it was.
    seen = c.get(decide, headers=rev).json()
    mine = next(s for s in seen if s["candidate_face_id"] == top["face_id"])
    assert mine["decisions_recorded"] == 1 and mine["decisions"] == []
    assert "scar" not in c.get(f"/api/v1/searches/{sid}", headers=rev).text
    # A viewer cannot decide; the case has no identification yet.
    assert decision(w.h("north", "viewer"), "potential candidate", "").status_code == 403
    assert c.get(f"/api/v1/cases/{cid}", headers=ex).json()["identifications"] == []
    second = decision(rev, "potential candidate", "ears match")
    assert second.status_code == 201, second.text
    state = second.json()
    assert state["status"] == "confirmed"
    assert {d["note"] for d in state["decisions"]} == {"same scar above the left eye", "ears match"}
    idents = c.get(f"/api/v1/cases/{cid}", headers=ex).json()["identifications"]
    assert [(i["subject"], i["gallery"], i["face_index"]) for i in idents] == [
        ("Abdullah_Gul", "records", 0)
    ]
    # A third opinion is recorded but changes nothing; stats and audit show the work.
    assert decision(rev2, "no candidate", "").json()["status"] == "confirmed"
    stats = c.get("/api/v1/stats", headers=w.h("north", "admin")).json()
    assert stats["searches"] == 1 and stats["confirmed_identifications"] == 1
    assert sum(d["searches"] for d in stats["searches_per_day"]) == 1
    actions = [
        e["action"]
        for e in c.get(f"/api/v1/audit?case_id={cid}", headers=w.h("north", "admin")).json()
    ]
    for wanted in (
        "case.create",
        "probe.upload",
        "search",
        "result.view",
        "review",
        "identification.confirm",
    ):
        assert wanted in actions
    assert c.get("/api/v1/audit/verify", headers=w.h("north", "admin")).json()["ok"] is True


def test_disagreement_is_not_a_confirmation(world: World, faces_dir: Path) -> None:
    c = world.client
    probes = add_gallery(world.service, faces_dir)
    ex, rev = world.h("north", "examiner"), world.h("north", "reviewer")
    cid = c.post("/api/v1/cases", json={"number": "D-1", "purpose": "missing"}, headers=ex).json()[
        "id"
    ]
    photo = probes["Aaron_Peirsol"]
    files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
    pid = c.post(f"/api/v1/cases/{cid}/probes", files=files, headers=ex).json()["id"]
    run = c.post(f"/api/v1/cases/{cid}/searches", json={"probe_id": pid, "k": 2}, headers=ex)
    top = run.json()["result"]["faces"][0]["candidates"][0]
    url = f"/api/v1/searches/{run.json()['id']}/reviews"
    one = {"face_index": 0, "candidate_face_id": top["face_id"]}
    c.post(url, json={**one, "outcome": "potential candidate"}, headers=ex)
    r = c.post(url, json={**one, "outcome": "inconclusive", "note": "too blurred"}, headers=rev)
    assert r.json()["status"] == "disputed"
    assert c.get(f"/api/v1/cases/{cid}", headers=ex).json()["identifications"] == []
    bad = c.post(url, json={**one, "face_index": 5, "outcome": "inconclusive"}, headers=rev)
    assert bad.status_code == 404
    bad = c.post(url, json={**one, "outcome": "maybe"}, headers=world.h("north", "reviewer2"))
    assert bad.status_code == 422

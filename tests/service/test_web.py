"""The pages, driven as a browser would with a form: sign-in and the session cookie, CSRF,
the organisation boundary and roles, and a real search's result page with its review."""

from __future__ import annotations

import html
import re
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from facetrace.search import LEAD_NOTICE
from facetrace.service import server, uow, web
from facetrace.service.tables import AuditEntry, CaseFile
from tests.service.conftest import PASSWORD, World, add_gallery

CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(page: str) -> str:
    match = CSRF.search(page)
    assert match, "no csrf field on the page"
    return match.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD, next: str = "/"):
    """Fill in the sign-in form as a browser would (its token comes with the form)."""
    form = client.get(f"/login?next={next}")
    assert form.status_code == 200
    data = {"username": username, "password": password, "next": next, "csrf": csrf_of(form.text)}
    return client.post("/login", data=data, follow_redirects=False)


def browser(world: World, username: str) -> tuple[TestClient, str]:
    """A new client signed in as ``username``, and its session's CSRF token."""
    client = TestClient(world.app)  # type: ignore[arg-type]
    assert sign_in(client, username).status_code == 303
    return client, csrf_of(client.get("/").text)


def new_case(client: TestClient, csrf: str, number: str = "2024-001") -> str:
    r = client.post(
        "/cases",
        data={"csrf": csrf, "number": number, "purpose": "dead", "description": "river"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return r.headers["location"]


def actions(world: World, action: str) -> list[AuditEntry]:
    with uow.read(world.service.sessions) as s:
        return list(s.execute(select(AuditEntry).where(AuditEntry.action == action)).scalars())


def test_sign_in_sets_a_strict_http_only_session_cookie(world: World) -> None:
    client = TestClient(world.app)  # type: ignore[arg-type]
    r = sign_in(client, "north-examiner", next="/galleries")
    assert r.status_code == 303 and r.headers["location"] == "/galleries"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(server.COOKIE))
    assert "HttpOnly" in cookie and "Path=/" in cookie and "samesite=strict" in cookie.lower()
    page = client.get("/")
    assert page.status_code == 200
    assert "north-examiner" in page.text and 'id="new-case-form"' in page.text


def test_wrong_password_is_said_and_audited(world: World) -> None:
    client = TestClient(world.app)  # type: ignore[arg-type]
    r = sign_in(client, "north-examiner", "not the password")
    assert r.status_code == 401
    assert "wrong username or password" in r.text
    assert server.COOKIE not in client.cookies
    assert actions(world, "login.failed"), "the failed login was not committed to the log"


def test_sign_in_form_needs_its_own_token(world: World) -> None:
    client = TestClient(world.app)  # type: ignore[arg-type]
    data = {"username": "north-examiner", "password": PASSWORD, "csrf": "forged"}
    r = client.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 403 and server.COOKIE not in client.cookies


def test_pages_send_strangers_to_sign_in(world: World) -> None:
    client = TestClient(world.app)  # type: ignore[arg-type]
    r = client.get("/cases/1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/cases/1"


def test_next_stays_on_this_site() -> None:
    assert web.safe_next("/cases/3?x=1") == "/cases/3?x=1"
    for outside in ("https://evil.example/", "//evil.example", "/\\evil.example", ""):
        assert web.safe_next(outside) == "/"


def test_a_post_without_the_csrf_token_is_refused(world: World) -> None:
    client, csrf = browser(world, "north-examiner")
    data = {"number": "2024-009", "purpose": "dead"}
    assert client.post("/cases", data=data).status_code == 403
    assert client.post("/cases", data={**data, "csrf": "wrong"}).status_code == 403
    assert client.post("/logout").status_code == 403
    with uow.read(world.service.sessions) as s:
        assert s.execute(select(CaseFile)).first() is None
    new_case(client, csrf, "2024-009")


def test_sign_out_ends_the_session(world: World) -> None:
    client, csrf = browser(world, "north-viewer")
    r = client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_case_form_errors_are_shown_on_the_form(world: World) -> None:
    client, csrf = browser(world, "north-examiner")
    location = new_case(client, csrf)
    page = client.get(location)
    assert page.status_code == 200 and "2024-001" in page.text
    assert 'capture="environment"' in page.text and 'accept="image/*"' in page.text
    again = client.post("/cases", data={"csrf": csrf, "number": "2024-001", "purpose": "dead"})
    assert again.status_code == 409 and "already exists" in again.text
    other = client.post("/cases", data={"csrf": csrf, "number": "2024-002", "purpose": "other"})
    assert other.status_code == 422 and "needs a text" in other.text
    assert 'value="2024-002"' in other.text  # what was typed is kept


def test_user_text_is_escaped(world: World) -> None:
    client, csrf = browser(world, "north-examiner")
    data = {"csrf": csrf, "number": "<script>x</script>", "purpose": "dead"}
    client.post("/cases", data=data)
    page = client.get("/").text
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_another_organisations_case_is_not_found(world: World) -> None:
    north, csrf = browser(world, "north-examiner")
    location = new_case(north, csrf)
    south, south_csrf = browser(world, "south-admin")
    assert south.get(location).status_code == 404
    files = {"photo": ("p.jpg", b"not an image", "image/jpeg")}
    r = south.post(f"{location}/search", data={"csrf": south_csrf}, files=files)
    assert r.status_code == 404
    assert south.get("/searches/1").status_code == 404
    assert "2024-001" not in south.get("/").text


def test_admin_pages_are_for_admins(world: World) -> None:
    examiner, _ = browser(world, "north-examiner")
    admin, csrf = browser(world, "north-admin")
    for page in ("/admin/audit", "/admin/stats", "/admin/users"):
        assert examiner.get(page).status_code == 403, page
        assert admin.get(page).status_code == 200, page
    assert "Audit log" not in examiner.get("/").text


def test_audit_log_filters(world: World) -> None:
    admin, _ = browser(world, "north-admin")
    browser(world, "north-examiner")
    page = admin.get("/admin/audit?user=north-examiner&action=login").text
    assert page.count('class="audit-entry"') == 1
    assert admin.get("/admin/audit?since=yesterday").status_code == 422
    assert "no user" in admin.get("/admin/audit?user=south-admin").text


def test_admin_creates_a_user_who_can_sign_in(world: World) -> None:
    admin, csrf = browser(world, "north-admin")
    data = {"csrf": csrf, "username": "north-new", "display_name": "New Examiner",
            "password": "a long enough password", "role": "examiner"}  # fmt: skip
    r = admin.post("/admin/users", data=data, follow_redirects=False)
    assert r.status_code == 303
    assert "New Examiner" in admin.get(r.headers["location"]).text
    short = admin.post("/admin/users", data={**data, "username": "north-x", "password": "short"})
    assert short.status_code == 422 and "at least" in short.text
    client = TestClient(world.app)  # type: ignore[arg-type]
    assert sign_in(client, "north-new", "a long enough password").status_code == 303


def test_meaning_in_words() -> None:
    c = {"fmr": 1e-4, "fmr_is_upper_bound": False, "expected_false_matches": 0.5,
         "above_threshold": True}  # fmt: skip
    words = web.meaning(c, 5000)
    assert words[0] == "About 1 in 10,000 non-mated comparisons score this high."
    assert "about 0.50 strangers" in words[1] and words[2].startswith("Above the threshold")
    bound = web.meaning({**c, "fmr": 1 / 123456, "fmr_is_upper_bound": True}, 5000)
    assert bound[0].startswith("At most 1 in 120,000 ")
    assert web.meaning({"fmr": None}, 10)[0].startswith("No calibration")


def search_probe(world: World, faces_dir: Path) -> tuple[str, str]:
    """An examiner's search of a real LFW photo: (the result page's path, the case's)."""
    probes = add_gallery(world.service, faces_dir)
    client, csrf = browser(world, "north-examiner")
    case = new_case(client, csrf)
    photo = probes["Adrien_Brody"]
    r = client.post(
        f"{case}/search",
        data={"csrf": csrf, "galleries": ["records"]},
        files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return r.headers["location"], case


def test_result_page_shows_the_notice_and_the_review(world: World, faces_dir: Path) -> None:
    result, case = search_probe(world, faces_dir)
    examiner, csrf = browser(world, "north-examiner")
    page = examiner.get(result)
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert 'id="lead-notice"' in page.text and LEAD_NOTICE in text
    assert "Adrien_Brody" in text and "non-mated comparisons" in text
    assert re.search(r'src="/api/v1/probes/\d+/crop\?box=\d+,\d+,\d+,\d+"', page.text)
    assert "/api/v1/faces/" in page.text and "<svg" in page.text
    assert "Record decision" in page.text
    views = actions(world, "result.view")
    assert views and views[-1].object_id == result.rsplit("/", 1)[1]

    # The examiner's decision on the best candidate of the first face.
    form = re.search(r'id="review-form-(\d+)-(\d+)"', page.text)
    assert form
    face_index, face_id = form.groups()
    decision = {"csrf": csrf, "face_index": face_index, "face_id": face_id,
                "outcome": "potential candidate", "note": "same ears"}  # fmt: skip
    r = examiner.post(f"{result}/reviews", data=decision, follow_redirects=False)
    assert r.status_code == 303
    block = f'id="review-form-{face_index}-{face_id}"'
    assert block not in examiner.get(result).text

    viewer, _ = browser(world, "north-viewer")
    seen = viewer.get(result).text
    assert "Record decision" not in seen and LEAD_NOTICE in html.unescape(seen)

    reviewer, reviewer_csrf = browser(world, "north-reviewer")
    before = reviewer.get(result).text
    assert block in before and "same ears" not in before and "stay hidden" in before
    second = {**decision, "csrf": reviewer_csrf, "note": ""}
    assert reviewer.post(f"{result}/reviews", data=second).status_code == 200
    after = reviewer.get(result).text
    assert "same ears" in after and "confirmed" in after
    assert "Adrien_Brody" in examiner.get(case).text.split('id="identifications"')[1]


def test_admin_ingests_from_the_galleries_page(world: World) -> None:
    import io

    from PIL import Image

    photo = io.BytesIO()
    Image.new("RGB", (64, 48), "gray").save(photo, "JPEG")
    files = {"archive": ("walk-in.jpg", photo.getvalue(), "image/jpeg")}
    examiner, examiner_csrf = browser(world, "north-examiner")
    refused = examiner.post("/galleries", data={"csrf": examiner_csrf, "gallery": "x"}, files=files)
    assert refused.status_code == 403

    admin, csrf = browser(world, "north-admin")
    assert 'id="ingest-form"' in admin.get("/galleries").text
    data = {"csrf": csrf, "gallery": "walk-in"}
    r = admin.post("/galleries", data=data, files=files, follow_redirects=False)
    assert r.status_code == 303, r.text
    job_id = int(r.headers["location"].rsplit("-", 1)[1])
    assert world.service.jobs.wait(job_id)["status"] == "done"
    page = admin.get("/galleries").text
    assert f'data-job-url="/api/v1/jobs/{job_id}"' in page and 'data-gallery="walk-in"' in page

    viewer, _ = browser(world, "north-viewer")
    seen = viewer.get("/galleries").text
    assert 'data-gallery="walk-in"' in seen and 'id="ingest-form"' not in seen
    south, _ = browser(world, "south-admin")
    assert "walk-in" not in south.get("/galleries").text


def test_statistics_count_searches(world: World, faces_dir: Path) -> None:
    search_probe(world, faces_dir)
    admin, _ = browser(world, "north-admin")
    page = admin.get("/admin/stats").text
    assert re.search(r'id="total-searches">1<', page) and 'id="searches-chart"' in page
    assert page.count("<rect ") == 30

"""Server-rendered pages: sign-in, cases, probe upload and search, results with review,
galleries and ingest jobs, and the administrator's audit log, statistics and users.

Pages are Jinja2 templates (``templates/``, autoescaped; user text is never marked safe)
with one stylesheet and a few lines of plain JavaScript (``static/``). They call the same
service layers as the REST API, inside the same units of work, so a page and an API call
leave the same audit entries. Every form that changes something carries the session's
CSRF token in a hidden ``csrf`` field; the sign-in form, made before there is a session,
carries a token doubled in a short-lived cookie instead. Errors on a page are shown as a
page, whatever the ``Accept`` header says; a page that needs a session sends the browser
to ``/login?next=...``. Images come from the API (``/api/v1/probes/...``,
``/api/v1/faces/...``), which takes the session cookie too.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable, Coroutine
from datetime import date
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from sqlalchemy import select

from facetrace import errors
from facetrace.decode import decode_file
from facetrace.errors import FacetraceError
from facetrace.search import LEAD_NOTICE
from facetrace.service import access, audit, auth, cases, http, reviews, server, tables, uow
from facetrace.service.auth import Principal
from facetrace.service.jobs import UNFINISHED
from facetrace.service.tables import OUTCOMES, PURPOSES, ROLES, CaseFile, User

HERE = Path(__file__).parent
LOGIN_COOKIE = "facetrace_login"
SECURITY_HEADERS = {
    "Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
}  # fmt: skip
templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
)


class PageRoute(APIRoute):
    """A page route: its errors are shown as HTML pages, never as JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except FacetraceError as exc:
                status = http.status_for(exc)[0]
                await run_in_threadpool(refused, request, status, str(exc))
                return error_page(request, status, str(exc))
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}"
                    for e in exc.errors()[:5]
                )
                return error_page(request, 422, f"the request is incomplete: {problems}")

        return page


router = APIRouter(include_in_schema=False, route_class=PageRoute)


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def safe_next(target: str | None) -> str:
    """Only a path on this site, so that ``next`` cannot send anyone elsewhere."""
    target = target or "/"
    if not target.startswith("/") or target.startswith(("//", "/\\")) or "\n" in target:
        return "/"
    return target


def permissions(who: Principal | None) -> set[str]:
    return set() if who is None else access.permissions(who.role)


def render(
    request: Request, name: str, who: Principal | None, status: int = 200, **context: Any
) -> Response:
    csrf = (who.csrf or "") if who else ""
    context = {"who": who, "csrf": csrf, "can": permissions(who), "lead_notice": LEAD_NOTICE,
               **context}  # fmt: skip
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def refused(request: Request, status: int, message: str) -> None:
    """A signed-in user's refused request (403, 413, 415) goes in the audit log."""
    if status in http.AUDITED:
        server.service(request).audit_refusal(request, status, message)


def form_status(exc: FacetraceError, request: Request) -> int:
    """The status of an error shown above the form that caused it; not being signed in,
    not allowed, or asking for what does not exist ends the page instead."""
    if isinstance(exc, errors.AuthError | errors.ForbiddenError | errors.NotFoundError):
        raise exc
    status = http.status_for(exc)[0]
    refused(request, status, str(exc))
    return status


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, status: int, message: str) -> Response:
    """An error as a page; a missing or ended session sends the browser to sign in."""
    if status == 401:
        here = request.url.path
        if request.method == "GET" and request.url.query:
            here += "?" + request.url.query
        response = redirect("/login?next=" + quote(safe_next(here), safe="/"))
        response.delete_cookie(server.COOKIE, path="/", httponly=True, samesite="strict")
        return response
    return render(request, "error.html", None, status, status_code=status, message=message)


async def signed_in(request: Request) -> Principal:
    """The signed-in user; a form that changes something must carry the CSRF token."""
    if request.method not in server.SAFE_METHODS:
        sent = (await request.form()).get("csrf")
        request.state.csrf = sent if isinstance(sent, str) else None
    return await run_in_threadpool(server.who, request)


Who = Annotated[Principal, Depends(signed_in)]
Text = Annotated[str, Form()]


def login_form(request: Request, status: int = 200, **context: Any) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", None, status, login_csrf=token, **context)
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=3600, path="/login",
        httponly=True, samesite="strict", secure=secure(request),
    )  # fmt: skip
    return response


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return login_form(request, next=safe_next(next))


@router.post("/login")
def login(
    request: Request,
    username: Text = "",
    password: Text = "",
    next: Text = "/",
    csrf: Text = "",
) -> Response:
    svc = server.service(request)
    address = server.address(request)
    target = safe_next(next)
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not secrets.compare_digest(csrf.encode(), expected.encode()):
        message = "This sign-in form has expired; please sign in again."
        return login_form(request, 403, error=message, username=username, next=target)
    try:
        with uow.write(svc.sessions) as s:
            auth.limit_login(s, svc.limiter, username, address)
            user = auth.authenticate(s, username, password, address)
            secret, _ = auth.start_session(s, user, address)
    except (errors.AuthError, errors.RateLimitError) as exc:
        status = 429 if isinstance(exc, errors.RateLimitError) else 401
        return login_form(request, status, error=str(exc), username=username, next=target)
    response = redirect(target)
    response.set_cookie(
        server.COOKIE, secret, max_age=int(auth.SESSION_LIFETIME.total_seconds()), path="/",
        httponly=True, samesite="strict", secure=secure(request),
    )  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/login", httponly=True, samesite="strict")
    return response


@router.post("/logout")
def logout(request: Request, who: Who) -> Response:
    with uow.write(server.service(request).sessions) as s:
        auth.end_session(s, who)
    response = redirect("/login")
    response.delete_cookie(server.COOKIE, path="/", httponly=True, samesite="strict")
    return response


def cases_page(request: Request, who: Principal, status: int = 200, **context: Any) -> Response:
    with uow.read(server.service(request).sessions) as s:
        rows = cases.list_cases(s, who)
    purposes = [(p, cases.PURPOSE_LABELS[p]) for p in PURPOSES]
    form = context.pop("form", {"purpose": "missing"})
    return render(
        request, "cases.html", who, status, cases=rows, purposes=purposes, form=form, **context
    )


@router.get("/")
def home(request: Request, who: Who) -> Response:
    return cases_page(request, who)


@router.post("/cases")
def create_case(
    request: Request,
    who: Who,
    number: Text = "",
    purpose: Text = "",
    purpose_text: Text = "",
    description: Text = "",
) -> Response:
    form = {"number": number, "purpose": purpose, "purpose_text": purpose_text,
            "description": description}  # fmt: skip
    try:
        with uow.write(server.service(request).sessions) as s:
            row = cases.create_case(s, who, number, purpose, description, purpose_text)
            case_id = row.id
    except FacetraceError as exc:
        status = form_status(exc, request)
        return cases_page(request, who, status, error=str(exc), form=form)
    return redirect(f"/cases/{case_id}")


def case_page(
    request: Request, who: Principal, case_id: int, status: int = 200, **context: Any
) -> Response:
    with uow.read(server.service(request).sessions) as s:
        case = access.case(s, who, case_id)
        detail = cases.case_detail(s, who, case)
        galleries = access.visible_gallery_names(s, who)
        names = {p["id"]: p["filename"] for p in detail["probes"]}
    for run in detail["searches"]:
        run["probe"] = names.get(run["probe_id"], f"probe {run['probe_id']}")
    return render(request, "case.html", who, status, case=detail, galleries=galleries, **context)


@router.get("/cases/{case_id}")
def case_view(request: Request, case_id: server.Id, who: Who) -> Response:
    return case_page(request, who, case_id)


@router.post("/cases/{case_id}/search")
def upload_and_search(
    request: Request,
    case_id: server.Id,
    who: Who,
    photo: Annotated[UploadFile, File()],
    galleries: Annotated[list[str] | None, Form()] = None,
) -> Response:
    svc = server.service(request)
    chosen = [g for g in galleries or [] if g] or None
    data = photo.file.read(svc.upload_limit + 1)
    try:
        with uow.write(svc.sessions) as s:
            case = access.case(s, who, case_id)
            row = cases.add_probe(
                s, who, case, photo.filename or "probe", data, svc.data_dir,
                svc.upload_limit, svc.settings.max_pixels,
            )  # fmt: skip
            probe_id = row.id
        run = cases.search(svc.ft, svc.sessions, who, probe_id, chosen)
    except FacetraceError as exc:
        status = form_status(exc, request)
        return case_page(request, who, case_id, status, error=str(exc), chosen=chosen or [])
    return redirect(f"/searches/{run.id}")


@functools.lru_cache(maxsize=512)
def probe_size(path: str, max_pixels: int, max_file_bytes: int) -> tuple[int, int] | None:
    """The upright width and height of a stored probe (immutable: named by its hash)."""
    try:
        _, image = decode_file(Path(path), max_pixels=max_pixels, max_file_bytes=max_file_bytes)
    except FacetraceError:
        return None
    return image.width, image.height


def one_in(fmr: float) -> str:
    """``1 / fmr`` as a readable count: 2 significant digits from 100 up."""
    n = 1 / fmr
    if n < 100:
        return f"{n:,.0f}"
    digits = len(str(int(n))) - 2
    return f"{round(n, -digits):,.0f}"


def meaning(c: dict[str, Any], faces_searched: int) -> list[str]:
    """What a candidate's score means, in words, from its calibrated FMR."""
    fmr = c.get("fmr")
    if fmr is None:
        return ["No calibration for this model: the score has no calibrated meaning."]
    if fmr <= 0:
        lines = ["No non-mated comparison in the calibration scored this high."]
    else:
        how = "At most" if c.get("fmr_is_upper_bound") else "About"
        rate = f"{fmr:.0%} of" if fmr >= 0.1 else f"1 in {one_in(fmr)}"
        lines = [f"{how} {rate} non-mated comparisons score this high."]
    expected = c.get("expected_false_matches")
    if expected is not None and expected > 0 and faces_searched:
        among = f"Among the {faces_searched:,} faces searched,"
        if expected >= 0.01:
            lines.append(
                f"{among} about {expected:,.2f} strangers are expected to score this high."
            )
        else:
            lines.append(f"{among} a stranger scores this high in about 1 search in "
                         f"{one_in(expected)}.")  # fmt: skip
    if c.get("above_threshold") is True:
        lines.append("Above the threshold for this search.")
    elif c.get("above_threshold") is False:
        lines.append("Below the threshold for this search.")
    return lines


def web_link(url: str | None) -> str | None:
    """A source URL fit for a link (http or https only); anything else stays plain text."""
    if url and url.strip().lower().startswith(("http://", "https://")):
        return url.strip()
    return None


def face_views(
    result: dict[str, Any], probe_id: int, states: dict[tuple[int, int], dict[str, Any]]
) -> list[dict[str, Any]]:
    searched = int(result.get("faces_searched") or 0)
    out = []
    for fi, face in enumerate(result.get("faces", [])):
        left, top, right, bottom = (int(v) for v in face["box"])
        crop = f"/api/v1/probes/{probe_id}/crop?box={left},{top},{right},{bottom}"
        candidates = [
            {**c, "rank": rank, "meaning": meaning(c, searched),
             "source_link": web_link(c.get("source_url")), "review": states.get((fi, c["face_id"]))}
            for rank, c in enumerate(face.get("candidates", []), 1)
        ]  # fmt: skip
        out.append(
            {"index": fi, "number": fi + 1, "x": left, "y": top, "w": right - left,
             "h": bottom - top, "crop": crop, "outcome": face.get("outcome"),
             "reason": face.get("outcome_reason"), "threshold": face.get("threshold"),
             "candidates": candidates}
        )  # fmt: skip
    return out


@router.get("/searches/{search_id}")
def result_page(request: Request, search_id: server.Id, who: Who) -> Response:
    svc = server.service(request)
    with uow.write(svc.sessions) as s:
        run, case = cases.open_search(s, who, search_id)
        states = reviews.state(s, who, run)
        probe = s.get(tables.Probe, run.probe_id)
        searcher = s.get(User, run.user_id)
        detail = cases.search_dict(run)
        case_info = cases.case_dict(case)
        probe_path = probe.path if probe else ""
        searched_by = searcher.display_name if searcher else f"user {run.user_id}"
    size = probe_size(probe_path, svc.settings.max_pixels, svc.settings.max_file_bytes)
    result = detail["result"]
    faces = face_views(result, run.probe_id, states)
    return render(
        request, "search.html", who, run=detail, result=result, case=case_info, size=size,
        searched_by=searched_by, faces=faces, outcomes=OUTCOMES,
    )  # fmt: skip


@router.post("/searches/{search_id}/reviews")
def record_review(
    request: Request,
    search_id: server.Id,
    who: Who,
    face_index: server.FormId,
    face_id: server.FormId,
    outcome: Text = "",
    note: Text = "",
) -> Response:
    with uow.write(server.service(request).sessions) as s:
        run, _ = cases.search_run(s, who, search_id)
        reviews.record(s, who, run, face_index, face_id, outcome, note)
    return redirect(f"/searches/{search_id}#cand-{face_index}-{face_id}")


def galleries_page(request: Request, who: Principal, status: int = 200, **context: Any) -> Response:
    svc = server.service(request)
    with uow.read(svc.sessions) as s:
        stats = access.gallery_list(s, who)
    try:
        jobs: list[dict[str, Any]] | None = svc.jobs.list(who)
    except (errors.ForbiddenError, errors.NotFoundError):
        jobs = None
    for job in jobs or []:
        job["active"] = job.get("status") in UNFINISHED
    own = [g["name"] for g in stats if g["access"] == "own"]
    return render(
        request, "galleries.html", who, status, galleries=stats, jobs=jobs, own=own, **context
    )


@router.get("/galleries")
def galleries(request: Request, who: Who) -> Response:
    return galleries_page(request, who)


@router.post("/galleries")
def ingest(
    request: Request,
    who: Who,
    archive: Annotated[UploadFile, File()],
    gallery: Text = "",
) -> Response:
    svc = server.service(request)
    try:
        job = svc.jobs.submit(who, gallery.strip(), archive.filename or "upload", archive.file)
    except FacetraceError as exc:
        status = form_status(exc, request)
        return galleries_page(request, who, status, error=str(exc), gallery=gallery)
    return redirect(f"/galleries#job-{job['id']}")


def org_users(s: Any, who: Principal) -> list[User]:
    q = select(User).where(User.org_id == who.org_id).order_by(User.username)
    return list(s.execute(q).scalars())


def parse_date(value: str, what: str) -> date | None:
    if not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise errors.RequestError(f"{what} must be a date (YYYY-MM-DD), not {value!r}") from None


@router.get("/admin/audit")
def audit_page(
    request: Request,
    who: Who,
    user: str = "",
    case: str = "",
    action: str = "",
    since: str = "",
    until: str = "",
) -> Response:
    access.require(who, "audit")
    filters = {"user": user, "case": case, "action": action, "since": since, "until": until}
    error = None
    with uow.read(server.service(request).sessions) as s:
        users = org_users(s, who)
        org_cases = s.execute(
            select(CaseFile).where(CaseFile.org_id == who.org_id).order_by(CaseFile.number)
        ).scalars()
        case_list = [{"id": c.id, "number": c.number} for c in org_cases]
        ids = {u.username: u.id for u in users}
        try:
            if user and user not in ids:
                raise errors.RequestError(f"no user {user!r} in your organisation")
            if case and not (case.isascii() and case.isdigit() and len(case) < 19):
                raise errors.RequestError(f"case must be a case id, not {case!r}")
            rows = audit.entries(
                s, who.org_id, user_id=ids.get(user), case_id=int(case) if case else None,
                action=action.strip() or None, since=parse_date(since, "from"),
                until=parse_date(until, "until"),
            )  # fmt: skip
        except errors.RequestError as exc:
            error, rows = str(exc), []
    for row in rows:
        row["detail_text"] = json.dumps(row["detail"], sort_keys=True, default=str)
    names = [u.username for u in users]
    return render(
        request, "audit.html", who, 422 if error else 200, entries=rows, users=names,
        cases=case_list, filters=filters, error=error,
    )  # fmt: skip


def bar_chart(days: list[tuple[str, int]], width: int = 600, height: int = 180) -> dict[str, Any]:
    """Bars for an inline SVG: one per day, scaled to the busiest day."""
    top = max([n for _, n in days] + [1])
    plot_h, step = height - 30, width / max(len(days), 1)
    bars = []
    for i, (day, n) in enumerate(days):
        h = round(plot_h * n / top, 1)
        bars.append(
            {"day": day, "n": n, "x": round(i * step + 1, 1), "w": round(step - 2, 1),
             "y": round(10 + plot_h - h, 1), "h": h, "cx": round(i * step + step / 2, 1)}
        )  # fmt: skip
    return {"width": width, "height": height, "top": top, "bars": bars, "base": 10 + plot_h}


@router.get("/admin/stats")
def stats_page(request: Request, who: Who) -> Response:
    access.require(who, "audit")
    with uow.read(server.service(request).sessions) as s:
        days = audit.searches_per_day(s, who.org_id, 30)
        totals = {
            "searches": cases.count_searches(s, who.org_id),
            "confirmed": reviews.confirmed(s, who.org_id),
            "open_reviews": reviews.open_reviews(s, who.org_id),
            "last_30_days": sum(n for _, n in days),
        }
    return render(request, "stats.html", who, chart=bar_chart(days), days=days, totals=totals)


def user_view(u: User) -> dict[str, Any]:
    locked = auth.aware(u.locked_until)
    return {"username": u.username, "display_name": u.display_name, "role": u.role,
            "active": u.active, "locked": bool(locked and locked > auth.now())}  # fmt: skip


def users_page(request: Request, who: Principal, status: int = 200, **context: Any) -> Response:
    with uow.read(server.service(request).sessions) as s:
        users = [user_view(u) for u in org_users(s, who)]
    form = context.pop("form", {"role": "examiner"})
    return render(
        request, "users.html", who, status, users=users, roles=ROLES, form=form, **context
    )


@router.get("/admin/users")
def users(request: Request, who: Who, created: str = "") -> Response:
    access.require(who, "users")
    return users_page(request, who, created=created)


@router.post("/admin/users")
def create_user(
    request: Request,
    who: Who,
    username: Text = "",
    display_name: Text = "",
    password: Text = "",
    role: Text = "",
) -> Response:
    access.require(who, "users")
    form = {"username": username, "display_name": display_name, "role": role}
    try:
        with uow.write(server.service(request).sessions) as s:
            org = s.get(tables.Organisation, who.org_id)
            if org is None:
                raise errors.NotFoundError("your organisation no longer exists")
            user = auth.create_user(
                s, org, username, password, role, display_name.strip() or None, actor=who.actor
            )
            created = user.username
    except FacetraceError as exc:
        status = form_status(exc, request)
        return users_page(request, who, status, error=str(exc), form=form)
    return redirect("/admin/users?created=" + quote(created))

"""The FastAPI application behind ``facetrace serve``: wiring, sign-in, and the routers.

``Service`` holds what every request shares: the settings, the core ``Facetrace`` (one
pipeline, loaded once), the session factory, the login limiter and the background job
runner. ``who`` resolves the caller from an ``Authorization: Bearer`` API token or the
browser's session cookie; a cookie-authenticated request that changes anything must also
carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import FastAPI, Form, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from facetrace.app import Facetrace
from facetrace.errors import AuthError, ForbiddenError
from facetrace.service import auth, http, uow
from facetrace.service.auth import LoginLimiter, Principal
from facetrace.settings import Settings

COOKIE = "facetrace_session"
MAX_ID = 2**63 - 1
# Every id in a path: positive and within a database integer, so that no id is a 500.
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
FormId = Annotated[int, Form(ge=0, le=MAX_ID)]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
HERE = FilePath(__file__).parent


class Service:
    """What the routes share; one per application."""

    def __init__(self, settings: Settings, *, upload_limit: int | None = None) -> None:
        self.settings = settings
        self.ft = Facetrace(settings)
        self.upload_limit = upload_limit or settings.max_file_bytes
        self.limiter = LoginLimiter()
        from facetrace.service.jobs import JobRunner

        self.jobs = JobRunner(self)

    def audit_refusal(self, request: Request, status: int, message: str) -> None:
        """A signed-in user's refused request (403, 413, 415) goes in the audit log."""
        principal = getattr(request.state, "principal", None)
        if principal is None:
            return
        from facetrace.service import audit

        with uow.write(self.sessions) as s:
            audit.record(
                s,
                principal.actor,
                "request.refused",
                detail={
                    "status": status,
                    "method": request.method,
                    "path": request.url.path,
                    "reason": message[:500],
                },
            )

    @property
    def image_limits(self) -> dict[str, int]:
        """The size caps for reading stored photos, as ``media`` takes them."""
        s = self.settings
        return {"max_file_bytes": s.max_file_bytes, "max_pixels": s.max_pixels}

    @property
    def sessions(self) -> sessionmaker:
        return self.ft.sessions

    @property
    def data_dir(self) -> FilePath:
        return FilePath(self.settings.data_dir)


def service(request: Request) -> Service:
    return request.app.state.service


def address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def who(request: Request) -> Principal:
    """The caller, or 401. Cookie sessions must show their CSRF token to change things."""
    principal = signed_in(request)
    if principal.via == "session" and request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token") or getattr(request.state, "csrf", None)
        if (
            not sent
            or not principal.csrf
            or not secrets.compare_digest(sent.encode(), principal.csrf.encode())
        ):
            raise ForbiddenError("missing or wrong CSRF token; reload the page and try again")
    return principal


def signed_in(request: Request) -> Principal:
    """The caller from their API token or session cookie, or 401 (no CSRF check).

    Found once a request: an upload was already checked by ``CredentialsFirst``."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    svc = service(request)
    header = request.headers.get("authorization", "")
    with uow.read(svc.sessions) as s:
        if header:
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise AuthError("use 'Authorization: Bearer <API token>'")
            principal = auth.from_token(s, secret.strip())
            s.commit()  # last_used_at
            request.state.principal = principal
            return principal
        principal = auth.from_session(s, request.cookies.get(COOKIE))
    request.state.principal = principal
    return principal


class CredentialsFirst:
    """ASGI middleware: an upload (a multipart body) from nobody signed in is refused
    with 401 before its body is read, so that anonymous callers cannot fill the disk
    with spooled uploads. The full check (role, CSRF) still runs in the route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            ctype = dict(scope.get("headers") or []).get(b"content-type", b"")
            if ctype.lower().startswith(b"multipart/"):
                request = Request(scope)
                try:
                    await run_in_threadpool(signed_in, request)
                except AuthError as exc:
                    response: Response = JSONResponse(http.body(401, "unauthorized", str(exc)), 401)
                    if http.wants_html(request):
                        response = RedirectResponse("/login", 303)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(settings: Settings, *, upload_limit: int | None = None) -> FastAPI:
    """The whole service for ``settings``'s data directory and database."""
    from facetrace.service import api, web

    svc = Service(settings, upload_limit=upload_limit)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        svc.sessions  # migrate before the first request  # noqa: B018
        svc.jobs.start()
        yield
        svc.jobs.stop()

    app = FastAPI(
        title="facetrace",
        summary="Face search for identifying the dead, the captured and the missing.",
        description=(
            "A candidate is a lead to be verified by a trained examiner, never an "
            "identification. Authenticate with `Authorization: Bearer <token>` "
            "(`facetrace admin create-token`, or `POST /api/v1/tokens`)."
        ),
        version="1",
        lifespan=lifespan,
    )
    app.state.service = svc
    http.install(app, html=web.error_page, on_refused=svc.audit_refusal)
    app.add_middleware(http.BodyLimit, limit=svc.upload_limit + 64 * 1024)
    app.add_middleware(CredentialsFirst)
    app.add_middleware(http.SecurityHeaders)
    app.include_router(api.router, prefix="/api/v1")
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app

"""The service's one boundary to HTTP: every error becomes one JSON shape and status.

    {"error": {"status": 404, "code": "not_found", "message": "case 7 does not exist"}}

facetrace's error hierarchy maps to status codes here and nowhere else (401, 403, 404,
409, 413, 415, 422, 429); pages get the same message in an HTML page. Request bodies
over the upload limit are refused with 413 as they arrive, before they are read whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facetrace import errors

log = logging.getLogger("facetrace.service")

# Most specific first: the first class an error is an instance of wins.
STATUS: list[tuple[type[errors.FacetraceError], int, str]] = [
    (errors.AuthError, 401, "unauthorized"),
    (errors.ForbiddenError, 403, "forbidden"),
    (errors.NotFoundError, 404, "not_found"),
    (errors.ConflictError, 409, "conflict"),
    (errors.PayloadTooLargeError, 413, "payload_too_large"),
    (errors.ImageTooLargeError, 413, "payload_too_large"),
    (errors.UnsupportedMediaError, 415, "unsupported_media_type"),
    (errors.NotAnImageError, 415, "unsupported_media_type"),
    (errors.RateLimitError, 429, "too_many_requests"),
    (errors.RequestError, 422, "invalid_request"),
    (errors.InputError, 422, "invalid_file"),
    (errors.NoFaceError, 422, "no_face"),
    (errors.ModelMismatchError, 409, "model_mismatch"),
    (errors.IndexError_, 503, "index_unavailable"),
    (errors.ConfigError, 500, "configuration"),
]
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}

HtmlRenderer = Callable[[Request, int, str], Response]
Refused = Callable[[Request, int, str], None]
AUDITED = {403, 413, 415}


def status_for(exc: errors.FacetraceError) -> tuple[int, str]:
    for cls, status, code in STATUS:
        if isinstance(exc, cls):
            return status, code
    return 400, "error"


def body(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message, **extra}}


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/docs", "/openapi")):
        return False
    return "text/html" in request.headers.get("accept", "")


def wrong_content_type(request: Request, exc: RequestValidationError) -> str | None:
    """Why a body failed because it came in the wrong media type, or None."""
    sent = request.headers.get("content-type", "").split(";")[0].strip().lower() or "none"
    for e in exc.errors():
        loc = tuple(e.get("loc", ()))
        if loc == ("body",) and sent != "application/json":
            return f"send this request's body as application/json, not {sent}"
        if loc[:1] == ("body",) and "file" in loc and sent != "multipart/form-data":
            return f"upload the file as multipart/form-data (field 'file'), not {sent}"
    return None


def install(
    app: FastAPI, html: HtmlRenderer | None = None, on_refused: Refused | None = None
) -> None:
    """Register the handlers that turn every failure into the one shape; refusals of
    ``AUDITED`` kinds are also passed to ``on_refused`` (the audit log)."""

    async def respond(request: Request, status: int, code: str, message: str, **extra: Any):
        if on_refused is not None and status in AUDITED:
            await run_in_threadpool(on_refused, request, status, message)
        if html is not None and wants_html(request):
            return html(request, status, message)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(body(status, code, message, **extra), status, headers=headers)

    @app.exception_handler(errors.FacetraceError)
    async def facetrace_error(request: Request, exc: errors.FacetraceError):
        status, code = status_for(exc)
        return await respond(request, status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        wrong = wrong_content_type(request, exc)
        if wrong:
            return await respond(request, 415, "unsupported_media_type", wrong)
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            message = "the request body is not valid JSON"
        else:
            message = "; ".join(f"{p['where']}: {p['problem']}" for p in problems[:5])
        return await respond(request, 422, "invalid_request", message, problems=problems)

    @app.exception_handler(IntegrityError)
    async def integrity(request: Request, exc: IntegrityError):
        log.info("integrity error on %s %s: %s", request.method, request.url.path, exc.orig)
        message = "this clashes with something that exists or was just made; reload and retry"
        return await respond(request, 409, "conflict", message)

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError):
        message = "a value is out of range or holds characters the database refuses"
        return await respond(request, 422, "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = HTTP_CODES.get(exc.status_code, "error")
        return await respond(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return await respond(request, 500, "internal", "internal error; it was logged")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, int(declared))
            return
        seen, over = 0, False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise errors.PayloadTooLargeError(
                        f"request body over the limit of {self.limit:,} bytes"
                    )
            return message

        async def answer(message: Message) -> None:
            # A body without Content-Length that runs over: whatever the application
            # made of the error while parsing it (FastAPI says 400), the answer is 413.
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._refuse(send, seen)

        await self.app(scope, counted, answer)

    async def _refuse(self, send: Send, size: int) -> None:
        message = f"request body of {size:,}+ bytes is over the limit of {self.limit:,} bytes"
        response = JSONResponse(body(413, "payload_too_large", message), 413)
        await response({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


class SecurityHeaders:
    """ASGI middleware: no caching, no MIME sniffing, no referrer, on every response.

    Results, face crops and tokens must not stay in a shared workstation's cache."""

    HEADERS = [
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in self.HEADERS if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)

"""The REST API, version 1: the same operations as the pages, as JSON.

Every route resolves the caller (``server.who``), checks the role and the organisation
boundary in the domain modules, and returns plain JSON; every failure has the shape of
``facetrace.service.http``. Uploads are multipart (``file``); everything else is JSON.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from facetrace import store
from facetrace.errors import NotFoundError, RequestError
from facetrace.service import access, audit, auth, cases, reviews, uow
from facetrace.service.auth import Principal
from facetrace.service.server import MAX_ID, Id, Service, address, service, who
from facetrace.service.tables import GalleryGrant, Organisation, User

router = APIRouter()
Who = Annotated[Principal, Depends(who)]
Svc = Annotated[Service, Depends(service)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=10_000)

    @field_validator("*", mode="after")
    @classmethod
    def no_nul(cls, value: Any) -> Any:
        """NUL characters are refused (PostgreSQL cannot store them in text)."""
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(t, str) and "\x00" in t for t in texts):
            raise ValueError("must not contain NUL characters")
        return value


class TokenIn(Strict):
    username: str
    password: str
    name: str = "api"
    expires_days: int = Field(90, ge=1, le=3650)


class CaseIn(Strict):
    number: str = Field(min_length=1, max_length=100)
    purpose: Literal["dead", "captured", "missing", "other"]
    purpose_text: str | None = None
    description: str = ""


class SearchIn(Strict):
    probe_id: int = Field(ge=1, le=MAX_ID)
    galleries: list[str] | None = None
    k: int = Field(10, ge=1, le=50)


class ReviewIn(Strict):
    face_index: int = Field(ge=0, le=10_000)
    candidate_face_id: int = Field(ge=1, le=MAX_ID)
    outcome: Literal["potential candidate", "no candidate", "inconclusive"]
    note: str = ""


class GalleryIn(Strict):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^/\\\x00]+$")
    description: str | None = None


class GrantIn(Strict):
    organisation: str


class UserIn(Strict):
    username: str
    password: str
    role: Literal["admin", "examiner", "reviewer", "viewer"]
    display_name: str | None = None


def me_dict(p: Principal) -> dict[str, Any]:
    return {
        "id": p.user_id,
        "username": p.username,
        "display_name": p.display_name,
        "organisation": p.org_name,
        "role": p.role,
        "permissions": sorted(access.permissions(p.role)),
    }


@router.post("/tokens", status_code=201, tags=["auth"])
def create_token(body: TokenIn, request: Request, svc: Svc) -> dict[str, Any]:
    """Sign in with a password and get an API token (shown once; stored hashed)."""
    with uow.write(svc.sessions) as s:
        auth.limit_login(s, svc.limiter, body.username, address(request))
        user = auth.authenticate(s, body.username, body.password, address(request))
        secret, row = auth.issue_token(s, user, body.name, body.expires_days)
        expires = row.expires_at.isoformat() if row.expires_at else None
        return {"id": row.id, "token": secret, "name": row.name, "expires_at": expires}


@router.delete("/tokens/{token_id}", tags=["auth"])
def revoke_token(token_id: Id, p: Who, svc: Svc) -> dict[str, Any]:
    with uow.write(svc.sessions) as s:
        row = auth.revoke_token(s, p, token_id)
        return {"id": row.id, "revoked": True}


@router.get("/me", tags=["auth"])
def me(p: Who) -> dict[str, Any]:
    return me_dict(p)


@router.get("/cases", tags=["cases"])
def list_cases(p: Who, svc: Svc) -> list[dict[str, Any]]:
    with uow.read(svc.sessions) as s:
        return cases.list_cases(s, p)


@router.post("/cases", status_code=201, tags=["cases"])
def create_case(body: CaseIn, p: Who, svc: Svc) -> dict[str, Any]:
    with uow.write(svc.sessions) as s:
        row = cases.create_case(
            s, p, body.number, body.purpose, body.description, body.purpose_text
        )
        return cases.case_dict(row)


@router.get("/cases/{case_id}", tags=["cases"])
def get_case(case_id: Id, p: Who, svc: Svc) -> dict[str, Any]:
    with uow.read(svc.sessions) as s:
        access.require(p, "read")
        return cases.case_detail(s, p, access.case(s, p, case_id))


@router.get("/cases/{case_id}/export", tags=["cases"])
def export_case(case_id: Id, p: Who, svc: Svc) -> dict[str, Any]:
    """The whole case as one JSON document (searches as shown, decisions, identifications);
    exporting is audited."""
    from facetrace.service.tables import SearchRun

    with uow.write(svc.sessions) as s:
        access.require(p, "read")
        case = access.case(s, p, case_id)
        runs = s.execute(select(SearchRun).where(SearchRun.case_id == case.id)).scalars()
        out = {
            **cases.case_detail(s, p, case),
            "searches": [
                {**cases.search_dict(r), "reviews": reviews.state_list(s, p, r)} for r in runs
            ],
        }
        audit.record(
            s, p.actor, "case.export", case_id=case.id, object_type="case", object_id=case.id
        )
        return out


@router.post("/cases/{case_id}/probes", status_code=201, tags=["cases"])
async def upload_probe(
    case_id: Id, p: Who, svc: Svc, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    """Store a probe photo with the case (multipart field ``file``)."""
    data = await file.read(svc.upload_limit + 1)
    with uow.write(svc.sessions) as s:
        case = access.case(s, p, case_id)
        row = cases.add_probe(
            s,
            p,
            case,
            file.filename or "probe",
            data,
            svc.data_dir,
            svc.upload_limit,
            svc.settings.max_pixels,
        )
        return {"id": row.id, "case_id": case.id, "filename": row.filename, "sha256": row.sha256}


@router.get("/probes/{probe_id}/image", tags=["cases"])
def probe_image(probe_id: Id, p: Who, svc: Svc) -> Response:
    from pathlib import Path

    from facetrace.service import media

    with uow.read(svc.sessions) as s:
        row, _case = cases.probe(s, p, probe_id)
    return Response(media.probe_image(Path(row.path), **svc.image_limits), media_type="image/jpeg")


@router.get("/probes/{probe_id}/crop", tags=["cases"])
def probe_crop(
    probe_id: Id,
    p: Who,
    svc: Svc,
    box: Annotated[str, Query(pattern=r"^-?\d{1,6}(,-?\d{1,6}){3}$")],
) -> Response:
    from pathlib import Path

    from facetrace.service import media

    with uow.read(svc.sessions) as s:
        row, _case = cases.probe(s, p, probe_id)
    left, top, right, bottom = (int(v) for v in box.split(","))
    return Response(
        media.probe_crop(Path(row.path), [left, top, right, bottom], **svc.image_limits),
        media_type="image/jpeg",
    )


@router.post("/cases/{case_id}/searches", status_code=201, tags=["search"])
def search(case_id: int, body: SearchIn, p: Who, svc: Svc) -> dict[str, Any]:
    """Search the galleries your organisation may see with a probe of this case."""
    run = cases.search(svc.ft, svc.sessions, p, body.probe_id, body.galleries, body.k, case_id)
    return cases.search_dict(run)


@router.get("/searches/{search_id}", tags=["search"])
def get_search(search_id: Id, p: Who, svc: Svc) -> dict[str, Any]:
    """A stored search exactly as it was shown; viewing it is audited."""
    with uow.write(svc.sessions) as s:
        access.require(p, "read")
        run, _case = cases.open_search(s, p, search_id)
        return {**cases.search_dict(run), "reviews": reviews.state_list(s, p, run)}


@router.post("/searches/{search_id}/reviews", status_code=201, tags=["review"])
def review(search_id: int, body: ReviewIn, p: Who, svc: Svc) -> dict[str, Any]:
    """Record your decision on one candidate; two people's 'potential candidate' confirm."""
    with uow.write(svc.sessions) as s:
        run, _case = cases.search_run(s, p, search_id)
        reviews.record(s, p, run, body.face_index, body.candidate_face_id, body.outcome, body.note)
        return reviews.state(s, p, run)[(body.face_index, body.candidate_face_id)]


@router.get("/searches/{search_id}/reviews", tags=["review"])
def get_reviews(search_id: Id, p: Who, svc: Svc) -> list[dict[str, Any]]:
    with uow.read(svc.sessions) as s:
        run, _case = cases.search_run(s, p, search_id)
        return reviews.state_list(s, p, run)


@router.get("/galleries", tags=["galleries"])
def galleries(p: Who, svc: Svc) -> list[dict[str, Any]]:
    with uow.read(svc.sessions) as s:
        access.require(p, "read")
        return access.gallery_list(s, p)


@router.post("/galleries", status_code=201, tags=["galleries"])
def create_gallery(body: GalleryIn, p: Who, svc: Svc) -> dict[str, Any]:
    from facetrace.db import Gallery
    from facetrace.errors import ConflictError

    with uow.write(svc.sessions) as s:
        access.require(p, "gallery.write")
        if s.execute(select(Gallery).where(Gallery.name == body.name)).scalar():
            raise ConflictError(f"gallery {body.name!r} already exists")
        g = Gallery(name=body.name, description=body.description)
        s.add(g)
        s.flush()
        access.own_new_gallery(s, p, g)
        return {"id": g.id, "name": g.name, "access": "own"}


@router.post("/galleries/{name}/grants", status_code=201, tags=["galleries"])
def grant(name: str, body: GrantIn, p: Who, svc: Svc) -> dict[str, Any]:
    """Share your organisation's gallery read-only with another organisation."""
    with uow.write(svc.sessions) as s:
        g = access.gallery(s, p, name, write=True)
        org = auth.get_org(s, body.organisation)
        if org.id == p.org_id:
            raise RequestError("a gallery is always visible to its own organisation")
        if s.get(GalleryGrant, (g.id, org.id)) is None:
            s.add(GalleryGrant(gallery_id=g.id, org_id=org.id, granted_by=p.user_id))
            audit.record(
                s,
                p.actor,
                "gallery.grant",
                object_type="gallery",
                object_id=g.id,
                detail={"organisation": org.name},
            )
        return {"gallery": g.name, "organisation": org.name, "access": "read"}


@router.delete("/galleries/{name}/grants/{organisation}", tags=["galleries"])
def revoke_grant(name: str, organisation: str, p: Who, svc: Svc) -> dict[str, Any]:
    with uow.write(svc.sessions) as s:
        g = access.gallery(s, p, name, write=True)
        org = auth.get_org(s, organisation)
        row = s.get(GalleryGrant, (g.id, org.id))
        if row is None:
            raise NotFoundError(f"gallery {name!r} is not shared with {organisation!r}")
        s.delete(row)
        audit.record(
            s,
            p.actor,
            "gallery.revoke",
            object_type="gallery",
            object_id=g.id,
            detail={"organisation": org.name},
        )
        return {"gallery": g.name, "organisation": org.name, "access": None}


@router.get("/galleries/{name}/subjects", tags=["galleries"])
def subjects(name: str, p: Who, svc: Svc) -> list[dict[str, Any]]:
    with uow.read(svc.sessions) as s:
        access.require(p, "read")
        return store.subject_stats(s, access.gallery(s, p, name))


@router.delete("/galleries/{name}/subjects/{subject}", tags=["galleries"])
def forget(name: str, subject: str, p: Who, svc: Svc) -> dict[str, Any]:
    """Delete a person's data on request: their faces, from the database and the index at
    once, and the photos of them uploaded to the service that show nobody else.

    The audit entry is written once they are gone, with how many there were."""
    with uow.read(svc.sessions) as s:
        access.gallery(s, p, name, write=True)
    photos: list[str] = []
    removed = svc.ft.forget(name, subject, photos)
    from facetrace.service.erasure import purge_uploads

    erased = purge_uploads(photos, svc.data_dir / "uploads")
    with uow.write(svc.sessions) as s:
        audit.record(
            s,
            p.actor,
            "subject.delete",
            object_type="subject",
            object_id=subject,
            detail={"gallery": name, "faces_removed": removed, "uploaded_photos_erased": erased},
        )
    return {
        "gallery": name,
        "subject": subject,
        "faces_removed": removed,
        "uploaded_photos_erased": erased,
    }


@router.post("/galleries/{name}/ingest", status_code=202, tags=["galleries"])
async def ingest(
    name: str, p: Who, svc: Svc, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    """Ingest a photo or a zip/tar of photos (a folder per person) as a background job."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(svc.jobs.submit, p, name, file.filename or "upload", file.file)


@router.get("/jobs", tags=["galleries"])
def jobs(p: Who, svc: Svc) -> list[dict[str, Any]]:
    return svc.jobs.list(p)


@router.get("/jobs/{job_id}", tags=["galleries"])
def job(job_id: Id, p: Who, svc: Svc) -> dict[str, Any]:
    return svc.jobs.get(p, job_id)


@router.get("/faces/{face_id}/crop", tags=["galleries"])
def face_crop(face_id: Id, p: Who, svc: Svc) -> Response:
    from facetrace.service import media

    with uow.read(svc.sessions) as s:
        return Response(media.face_crop(s, p, face_id, **svc.image_limits), media_type="image/jpeg")


@router.get("/users", tags=["admin"])
def users(p: Who, svc: Svc) -> list[dict[str, Any]]:
    with uow.read(svc.sessions) as s:
        access.require(p, "users")
        rows = s.execute(select(User).where(User.org_id == p.org_id).order_by(User.id))
        return [
            {
                "id": u.id,
                "username": u.username,
                "display_name": u.display_name,
                "role": u.role,
                "active": u.active,
            }
            for u in rows.scalars()
        ]


@router.post("/users", status_code=201, tags=["admin"])
def create_user(body: UserIn, p: Who, svc: Svc) -> dict[str, Any]:
    with uow.write(svc.sessions) as s:
        access.require(p, "users")
        org = s.get(Organisation, p.org_id)
        assert org is not None
        u = auth.create_user(
            s, org, body.username, body.password, body.role, body.display_name, p.actor
        )
        return {"id": u.id, "username": u.username, "role": u.role, "organisation": org.name}


@router.get("/audit", tags=["admin"])
def audit_log(
    p: Who,
    svc: Svc,
    user: str | None = None,
    case_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    action: str | None = None,
    since: date | None = None,
    until: date | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[dict[str, Any]]:
    """Your organisation's audit entries, newest first (administrators)."""
    with uow.read(svc.sessions) as s:
        access.require(p, "audit")
        user_id = None
        if user:
            row = s.execute(
                select(User).where(User.username == user, User.org_id == p.org_id)
            ).scalar()
            if row is None:
                raise NotFoundError(f"user {user!r} does not exist")
            user_id = row.id
        return audit.entries(
            s,
            p.org_id,
            user_id=user_id,
            case_id=case_id,
            action=action,
            since=since,
            until=until,
            limit=limit,
        )


@router.get("/audit/verify", tags=["admin"])
def audit_verify(p: Who, svc: Svc) -> dict[str, Any]:
    with uow.read(svc.sessions) as s:
        access.require(p, "audit")
        return audit.verify(s).to_dict()


@router.get("/stats", tags=["admin"])
def stats(p: Who, svc: Svc) -> dict[str, Any]:
    with uow.read(svc.sessions) as s:
        access.require(p, "audit")
        return {
            "searches": cases.count_searches(s, p.org_id),
            "confirmed_identifications": reviews.confirmed(s, p.org_id),
            "open_reviews": reviews.open_reviews(s, p.org_id),
            "searches_per_day": [
                {"day": d, "searches": n} for d, n in audit.searches_per_day(s, p.org_id)
            ],
        }

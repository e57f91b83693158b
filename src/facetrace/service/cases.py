"""Cases, their probe photos, and searches stored exactly as they were shown.

Every search is made inside a case. A probe photo is checked (it must decode as an
image within the size limits) and stored once under ``DATA/probes`` by its SHA-256.
A search runs the core pipeline over the galleries the user's organisation may see,
outside any transaction, then stores its candidate list with the model, the galleries
and their sizes, and the thresholds used, and writes the audit entry, in one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from facetrace.app import Facetrace
from facetrace.decode import decode_bytes, sha256_hex
from facetrace.errors import ConflictError, NotFoundError, PayloadTooLargeError, RequestError
from facetrace.search import LEAD_NOTICE
from facetrace.service import access, audit, uow
from facetrace.service.auth import Principal
from facetrace.service.tables import (
    PURPOSES,
    CaseFile,
    Identification,
    Probe,
    SearchRun,
    ShownFace,
)

PURPOSE_LABELS = {
    "dead": "identification of the dead",
    "captured": "identification of a captured person",
    "missing": "identification of a missing person",
    "other": "other",
}


def case_dict(row: CaseFile) -> dict[str, Any]:
    return {
        "id": row.id,
        "number": row.number,
        "purpose": row.purpose,
        "purpose_label": PURPOSE_LABELS[row.purpose],
        "purpose_text": row.purpose_text,
        "description": row.description,
        "created_at": row.created_at.isoformat(),
    }


def create_case(
    session: Session,
    who: Principal,
    number: str,
    purpose: str,
    description: str = "",
    purpose_text: str | None = None,
) -> CaseFile:
    access.require(who, "case.write")
    number = (number or "").strip()
    if not number or len(number) > 100:
        raise RequestError("case number must be 1 to 100 characters")
    if purpose not in PURPOSES:
        raise RequestError(f"purpose must be one of {', '.join(PURPOSES)}")
    if purpose == "other" and not (purpose_text or "").strip():
        raise RequestError("purpose 'other' needs a text saying what the purpose is")
    clash = select(CaseFile).where(CaseFile.org_id == who.org_id, CaseFile.number == number)
    if session.execute(clash).scalar():
        raise ConflictError(f"case number {number!r} already exists in your organisation")
    row = CaseFile(
        org_id=who.org_id,
        number=number,
        purpose=purpose,
        purpose_text=(purpose_text or "").strip() or None,
        description=(description or "").strip(),
        created_by=who.user_id,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        who.actor,
        "case.create",
        case_id=row.id,
        object_type="case",
        object_id=row.id,
        detail={"number": number, "purpose": purpose},
    )
    return row


def list_cases(session: Session, who: Principal) -> list[dict[str, Any]]:
    access.require(who, "read")
    rows = session.execute(
        select(CaseFile).where(CaseFile.org_id == who.org_id).order_by(CaseFile.id.desc())
    ).scalars()
    return [case_dict(r) for r in rows]


def add_probe(
    session: Session,
    who: Principal,
    case: CaseFile,
    filename: str,
    data: bytes,
    data_dir: Path,
    max_bytes: int,
    max_pixels: int,
) -> Probe:
    """Check and store a probe photo with its case."""
    access.require(who, "search")
    name = Path(filename or "probe").name[:200] or "probe"
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"{name}: {len(data):,} bytes, over the limit of {max_bytes:,}")
    image = decode_bytes(data, name, max_pixels=max_pixels)
    sha = sha256_hex(data)
    path = data_dir / "probes" / sha[:2] / f"{sha}.{image.format.lower()}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".part")
        part.write_bytes(data)
        part.replace(path)
    row = Probe(
        case_id=case.id,
        sha256=sha,
        filename=name,
        path=str(path),
        media_type=f"image/{image.format.lower()}",
        uploaded_by=who.user_id,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        who.actor,
        "probe.upload",
        case_id=case.id,
        object_type="probe",
        object_id=row.id,
        detail={"filename": name, "sha256": sha, "width": image.width, "height": image.height},
    )
    return row


def probe(session: Session, who: Principal, probe_id: int) -> tuple[Probe, CaseFile]:
    return _in_case(session, who, Probe, probe_id, "probe")


def search(
    ft: Facetrace,
    sessions: sessionmaker,
    who: Principal,
    probe_id: int,
    galleries: list[str] | None = None,
    k: int = 10,
    case_id: int | None = None,
) -> SearchRun:
    """Search a case's probe over visible galleries; store and audit what was shown.

    ``case_id``, when given, is the case the caller named: a probe of another case is
    not found."""
    if not 1 <= k <= 50:
        raise RequestError("k must be between 1 and 50")
    with uow.read(sessions) as s:
        access.require(who, "search")
        row, case = probe(s, who, probe_id)
        if case_id is not None and case.id != case_id:
            raise NotFoundError(f"probe {probe_id} is not in case {case_id}")
        names = access.visible_gallery_names(s, who)
        if galleries:
            for name in galleries:
                if name not in names:
                    raise NotFoundError(f"gallery {name!r} does not exist")
            chosen = list(dict.fromkeys(galleries))
        else:
            chosen = list(names)
        probe_path, case_id = Path(row.path), case.id
    if not chosen:
        raise RequestError("your organisation has no gallery to search yet")
    result = ft.search(probe_path, chosen, k).to_dict()
    result["probe"] = row.filename
    uploads = f"{ft.settings.data_dir / 'uploads'}/"
    for face in result["faces"]:
        for c in face["candidates"]:  # no server paths in what users see
            if c["image"].startswith(uploads):
                c["image"] = "upload " + c["image"].removeprefix(uploads)
    params = {
        "k": k,
        "galleries": result["galleries"],
        "faces_searched": result["faces_searched"],
        "target_fpir": result["target_fpir"],
        "calibration": result["calibration"],
        "thresholds": [f["threshold"] for f in result["faces"]],
    }
    with uow.write(sessions) as s:
        run = SearchRun(
            case_id=case_id,
            probe_id=probe_id,
            user_id=who.user_id,
            model=result["model"],
            params=params,
            result=result,
        )
        s.add(run)
        s.flush()
        faces = {c["face_id"] for f in result["faces"] for c in f["candidates"]}
        known = set(
            s.execute(
                select(ShownFace.face_id).where(
                    ShownFace.org_id == who.org_id, ShownFace.face_id.in_(faces)
                )
            ).scalars()
        )
        s.add_all(ShownFace(org_id=who.org_id, face_id=f) for f in faces - known)
        audit.record(
            s,
            who.actor,
            "search",
            case_id=case_id,
            object_type="search",
            object_id=run.id,
            detail={"probe": probe_id, "galleries": chosen, "faces": len(result["faces"])},
        )
    return run


def search_run(session: Session, who: Principal, search_id: int) -> tuple[SearchRun, CaseFile]:
    return _in_case(session, who, SearchRun, search_id, "search")


def open_search(session: Session, who: Principal, search_id: int) -> tuple[SearchRun, CaseFile]:
    """A stored search, to be shown: looked up as ``search_run``, and the view audited."""
    run, case = search_run(session, who, search_id)
    audit.record(
        session, who.actor, "result.view", case_id=case.id, object_type="search", object_id=run.id
    )
    return run, case


def _in_case(session: Session, who: Principal, model: Any, row_id: int, noun: str) -> Any:
    """(row, its case) when the row's case is the user's organisation's. Missing and
    invisible answer the same, so a 404 never tells another organisation's case id."""
    row = session.get(model, row_id)
    case = session.get(CaseFile, row.case_id) if row is not None else None
    if case is None or case.org_id != who.org_id:
        raise NotFoundError(f"{noun} {row_id} does not exist")
    return row, case


def search_dict(row: SearchRun) -> dict[str, Any]:
    return {
        "id": row.id,
        "case_id": row.case_id,
        "probe_id": row.probe_id,
        "user_id": row.user_id,
        "model": row.model,
        "created_at": row.created_at.isoformat(),
        "params": row.params,
        "notice": LEAD_NOTICE,
        "result": row.result,
    }


def case_detail(session: Session, who: Principal, case: CaseFile) -> dict[str, Any]:
    probes = session.execute(
        select(Probe).where(Probe.case_id == case.id).order_by(Probe.id)
    ).scalars()
    runs = session.execute(
        select(SearchRun).where(SearchRun.case_id == case.id).order_by(SearchRun.id.desc())
    ).scalars()
    idents = session.execute(
        select(Identification).where(Identification.case_id == case.id)
    ).scalars()
    return {
        **case_dict(case),
        "probes": [
            {
                "id": p.id,
                "filename": p.filename,
                "sha256": p.sha256,
                "created_at": p.created_at.isoformat(),
            }
            for p in probes
        ],
        "searches": [
            {
                "id": r.id,
                "probe_id": r.probe_id,
                "created_at": r.created_at.isoformat(),
                "faces": len(r.result.get("faces", [])),
                "faces_searched": r.params.get("faces_searched"),
            }
            for r in runs
        ],
        "identifications": [identification_dict(i) for i in idents],
    }


def identification_dict(row: Identification) -> dict[str, Any]:
    return {
        "id": row.id,
        "probe_id": row.probe_id,
        "search_id": row.search_id,
        "face_index": row.face_index,
        "candidate_face_id": row.candidate_face_id,
        "subject": row.subject_name,
        "gallery": row.gallery_name,
        "confirmed_at": row.confirmed_at.isoformat(),
    }


def count_searches(session: Session, org_id: int) -> int:
    q = select(func.count()).select_from(SearchRun).join(CaseFile)
    return int(session.execute(q.where(CaseFile.org_id == org_id)).scalar_one())

"""Two-person review: one decision per person and candidate, blind to the others.

Per candidate, a user whose role may review records an outcome (potential candidate, no
candidate, inconclusive) with a note, once. An identification is confirmed only when two
different people have each recorded *potential candidate* for it (EU AI Act Art. 14(5));
it then links the case's probe face to the candidate's subject. Until a user has recorded
their own decision on a candidate (or it is confirmed), they see how many decisions exist
and "under review", never what the others decided or wrote; administrators included.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facetrace.db import FaceSubject
from facetrace.errors import ConflictError, NotFoundError, RequestError
from facetrace.search import POTENTIAL
from facetrace.service import access, audit
from facetrace.service.auth import Principal
from facetrace.service.tables import OUTCOMES, Identification, Review, SearchRun, User


def candidate(run: SearchRun, face_index: int, face_id: int) -> dict[str, Any]:
    faces = run.result.get("faces", [])
    if not 0 <= face_index < len(faces):
        raise NotFoundError(f"search {run.id} has no probe face {face_index}")
    for c in faces[face_index]["candidates"]:
        if c["face_id"] == face_id:
            return dict(c)
    raise NotFoundError(f"face {face_id} is not a candidate for probe face {face_index}")


def _reviews(session: Session, run_id: int) -> list[Review]:
    q = select(Review).where(Review.search_id == run_id).order_by(Review.id)
    return list(session.execute(q).scalars())


def status_of(decisions: list[Review], confirmed: bool) -> str:
    if confirmed:
        return "confirmed"
    outcomes = {d.outcome for d in decisions}
    if not decisions:
        return "open"
    if outcomes == {POTENTIAL}:
        return "awaiting second review"
    if POTENTIAL in outcomes:
        return "disputed"
    return "not identified" if len(decisions) >= 2 else "awaiting second review"


def record(
    session: Session,
    who: Principal,
    run: SearchRun,
    face_index: int,
    face_id: int,
    outcome: str,
    note: str = "",
) -> None:
    """Record ``who``'s decision (``state`` then tells what they may see of it)."""
    access.require(who, "review")
    if outcome not in OUTCOMES:
        raise RequestError(f"outcome must be one of: {', '.join(OUTCOMES)}")
    cand = candidate(run, face_index, face_id)
    mine = [
        r
        for r in _reviews(session, run.id)
        if (r.face_index, r.candidate_face_id) == (face_index, face_id)
    ]
    if any(r.user_id == who.user_id for r in mine):
        raise ConflictError("you have already recorded a decision on this candidate")
    row = Review(
        search_id=run.id,
        face_index=face_index,
        candidate_face_id=face_id,
        user_id=who.user_id,
        outcome=outcome,
        note=(note or "").strip()[:5000],
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        who.actor,
        "review",
        case_id=run.case_id,
        object_type="review",
        object_id=row.id,
        detail={
            "search": run.id,
            "face_index": face_index,
            "candidate_face_id": face_id,
            "outcome": outcome,
        },
    )
    if outcome == POTENTIAL:
        earlier = [r for r in mine if r.outcome == POTENTIAL and r.user_id != who.user_id]
        if earlier:
            _confirm(session, who, run, face_index, cand, earlier[0], row)


def _confirm(
    session: Session,
    who: Principal,
    run: SearchRun,
    face_index: int,
    cand: dict[str, Any],
    first: Review,
    second: Review,
) -> None:
    link = session.get(FaceSubject, cand["face_id"])
    ident = Identification(
        case_id=run.case_id,
        probe_id=run.probe_id,
        search_id=run.id,
        face_index=face_index,
        candidate_face_id=cand["face_id"],
        subject_id=link.subject_id if link else None,
        subject_name=cand.get("subject"),
        gallery_name=cand["gallery"],
        first_review_id=first.id,
        second_review_id=second.id,
    )
    session.add(ident)
    session.flush()
    audit.record(
        session,
        who.actor,
        "identification.confirm",
        case_id=run.case_id,
        object_type="identification",
        object_id=ident.id,
        detail={
            "subject": cand.get("subject"),
            "gallery": cand["gallery"],
            "reviewers": [first.user_id, second.user_id],
        },
    )


def state(
    session: Session, who: Principal, run: SearchRun
) -> dict[tuple[int, int], dict[str, Any]]:
    """Per (probe face, candidate face): status and the decisions ``who`` may see."""
    reviews = _reviews(session, run.id)
    confirmed = {
        (i.face_index, i.candidate_face_id)
        for i in session.execute(
            select(Identification).where(Identification.search_id == run.id)
        ).scalars()
    }
    names = {
        u.id: u.display_name
        for u in session.execute(
            select(User).where(User.id.in_({r.user_id for r in reviews}))
        ).scalars()
    }
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for fi, face in enumerate(run.result.get("faces", [])):
        for c in face["candidates"]:
            key = (fi, c["face_id"])
            decisions = [r for r in reviews if (r.face_index, r.candidate_face_id) == key]
            decided = any(r.user_id == who.user_id for r in decisions)
            can_see = decided or key in confirmed
            status = status_of(decisions, key in confirmed)
            if not can_see and decisions:  # "disputed" would tell how the others decided
                status = "under review"
            out[key] = {
                "face_index": fi,
                "candidate_face_id": c["face_id"],
                "status": status,
                "decisions_recorded": len(decisions),
                "you_decided": decided,
                "decisions": [
                    {
                        "by": names.get(r.user_id),
                        "user_id": r.user_id,
                        "outcome": r.outcome,
                        "note": r.note,
                        "at": r.created_at.isoformat(),
                    }
                    for r in decisions
                    if can_see or r.user_id == who.user_id
                ],
            }
    return out


def state_list(session: Session, who: Principal, run: SearchRun) -> list[dict[str, Any]]:
    return list(state(session, who, run).values())


def confirmed(session: Session, org_id: int) -> int:
    """How many identifications an organisation's cases have confirmed."""
    from facetrace.service.tables import CaseFile

    q = select(func.count()).select_from(Identification).join(CaseFile)
    return int(session.execute(q.where(CaseFile.org_id == org_id)).scalar_one())


def open_reviews(session: Session, org_id: int) -> int:
    """Candidates someone marked as potential that are not yet confirmed."""
    from facetrace.service.tables import CaseFile

    rows = session.execute(
        select(Review.search_id, Review.face_index, Review.candidate_face_id)
        .join(SearchRun, SearchRun.id == Review.search_id)
        .join(CaseFile, CaseFile.id == SearchRun.case_id)
        .where(CaseFile.org_id == org_id, Review.outcome == POTENTIAL)
    ).all()
    done = set(
        session.execute(
            select(
                Identification.search_id,
                Identification.face_index,
                Identification.candidate_face_id,
            )
            .join(CaseFile, CaseFile.id == Identification.case_id)
            .where(CaseFile.org_id == org_id)
        ).all()
    )
    return len({tuple(r) for r in rows} - {tuple(d) for d in done})

"""The search stage: a probe photo against galleries (1:N), and two photos (1:1).

Score convention (everywhere in facetrace): cosine similarity of the two faces' vectors,
in [-1, 1], higher is more alike. ``SAME_PERSON_THRESHOLD`` is the score above which
``compare`` says "same person"; it was chosen on LFW View 1 (the development split), see
the README. A search returns, per face found in the probe, the ``k`` best *subjects*
(each with its best-scoring gallery face); faces with no subject count one by one.

Open-set decision (the outcome words of INTERPOL's face identification): with the
calibration of the model (``facetrace.calibration``), each search sets the threshold that
gives the configured false positive identification rate (``target_fpir``) for the number
of gallery faces searched. Each candidate carries its estimated false match rate (FMR)
and the expected number of strangers scoring as high in galleries of that size; each
probe face gets an outcome: ``potential candidate`` (at least one candidate at or above
the threshold), ``no candidate`` (none), or ``inconclusive`` (the probe face is too small
or too blurred to rely on, whatever the scores).

A candidate is a lead for a trained person to verify, never an identification:
``LEAD_NOTICE`` travels with every result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import sessionmaker

from facetrace import store
from facetrace.calibration import Calibration
from facetrace.embed import check_same_model, cosine
from facetrace.errors import NoFaceError
from facetrace.gallery_index import GalleryIndexes
from facetrace.index.base import VectorIndex
from facetrace.pipeline import Analyzer
from facetrace.quality import BLUR, SMALL_PX
from facetrace.records import AnalysedImage, Face

# 1:1 thresholds per model, chosen on LFW View 1 (benchmarks/threshold_view1.py).
SAME_PERSON_THRESHOLDS = {"dlib_resnet_v1": 0.9043, "dlib_resnet_v1_flip": 0.9128}
SAME_PERSON_THRESHOLD = SAME_PERSON_THRESHOLDS["dlib_resnet_v1_flip"]
POTENTIAL, NONE, INCONCLUSIVE = "potential candidate", "no candidate", "inconclusive"
LEAD_NOTICE = (
    "A candidate is a lead to be verified by a trained examiner, not an identification. "
    "Never notify anyone on a face match alone."
)


@dataclass(frozen=True)
class Candidate:
    subject: str | None
    score: float
    gallery: str
    image: str
    source_url: str | None
    face_id: int
    box: list[int]
    quality: dict[str, Any]
    fmr: float | None = None
    fmr_is_upper_bound: bool = False
    expected_false_matches: float | None = None
    above_threshold: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "score": round(self.score, 4),
            "gallery": self.gallery,
            "image": self.image,
            "source_url": self.source_url,
            "face_id": self.face_id,
            "box": self.box,
            "quality": self.quality,
            "fmr": self.fmr,
            "fmr_is_upper_bound": self.fmr_is_upper_bound,
            "expected_false_matches": self.expected_false_matches,
            "above_threshold": self.above_threshold,
            "details": self.details,
        }


def face_dict(face: Face) -> dict[str, Any]:
    return {
        "box": face.box.as_list(),
        "landmarks": face.landmarks_list(),
        "quality": face.quality.to_dict(),
    }


@dataclass(frozen=True)
class FaceMatches:
    """One probe face, its candidates and the open-set outcome."""

    face: Face
    candidates: list[Candidate]
    outcome: str
    reason: str
    threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **face_dict(self.face),
            "outcome": self.outcome,
            "outcome_reason": self.reason,
            "threshold": self.threshold,
            "candidates": [c.to_dict() for c in self.candidates],
        }


@dataclass(frozen=True)
class SearchResult:
    probe: str
    model: str
    galleries: dict[str, int]
    faces: list[FaceMatches]
    target_fpir: float | None = None
    calibration: str | None = None

    @property
    def faces_searched(self) -> int:
        return sum(self.galleries.values())

    @property
    def message(self) -> str | None:
        if not self.faces:
            return "no face found in the photo"
        if not self.faces_searched:
            return "no gallery face to search: ingest photos first (facetrace ingest)"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "model": self.model,
            "galleries": [{"name": n, "faces": c} for n, c in self.galleries.items()],
            "faces_searched": self.faces_searched,
            "target_fpir": self.target_fpir,
            "calibration": self.calibration,
            "notice": LEAD_NOTICE,
            "message": self.message,
            "faces": [f.to_dict() for f in self.faces],
        }


def inconclusive_reason(face: Face) -> str | None:
    """Why a probe face is too poor to rely on, or None."""
    q = face.quality
    if q.face_px < SMALL_PX:
        return f"probe face too small ({q.face_px} px < {SMALL_PX})"
    if q.sharpness < BLUR:
        return f"probe face too blurred (sharpness {q.sharpness} < {BLUR})"
    return None


def decide(
    face: Face, cands: list[Candidate], calib: Calibration | None, fpir: float, n: int
) -> FaceMatches:
    """Attach FMRs and the open-set outcome to a face's candidates."""
    if calib is None:
        return FaceMatches(face, cands, INCONCLUSIVE, "no calibration for this model", None)
    threshold = calib.threshold_for_fpir(fpir, n)
    scored = []
    for c in cands:
        fmr, bound = calib.fmr_at(c.score)
        scored.append(
            replace(
                c,
                fmr=fmr,
                fmr_is_upper_bound=bound,
                expected_false_matches=fmr * n,
                above_threshold=c.score >= threshold,
            )
        )
    above = sum(bool(c.above_threshold) for c in scored)
    poor = inconclusive_reason(face)
    if poor:
        return FaceMatches(face, scored, INCONCLUSIVE, poor, threshold)
    if above:
        why = f"{above} candidate(s) at or above the threshold {threshold:.4f}"
        return FaceMatches(face, scored, POTENTIAL, why, threshold)
    why = f"no candidate reaches the threshold {threshold:.4f} (target FPIR {fpir:g}, {n:,} faces)"
    return FaceMatches(face, scored, NONE, why, threshold)


class Searcher:
    """Searches galleries with the faces of probe photos."""

    def __init__(
        self,
        analyzer: Analyzer,
        sessions: sessionmaker,
        indexes: GalleryIndexes,
        rotations: bool = True,
        calibration: Calibration | None = None,
        target_fpir: float = 0.01,
    ) -> None:
        self.analyzer = analyzer
        self.sessions = sessions
        self.indexes = indexes
        self.rotations = rotations
        self.calibration = calibration
        self.target_fpir = target_fpir

    def search(self, photo: Path, galleries: list[str] | None = None, k: int = 10) -> SearchResult:
        image = self.analyzer.analyse_file(photo, rotations=self.rotations)
        return self.search_faces(image, galleries, k)

    def search_faces(
        self, image: AnalysedImage, galleries: list[str] | None, k: int
    ) -> SearchResult:
        model = self.analyzer.model
        with self.sessions() as s:
            chosen = (
                [store.get_gallery(s, n) for n in galleries]
                if galleries
                else store.all_galleries(s)
            )
            opened: dict[str, VectorIndex] = {}
            for g in chosen:
                for other in store.gallery_models(s, g.id):
                    check_same_model(model, other, f"gallery {g.name!r}")
                opened[g.name] = self.indexes.load(s, g, model)
            results = []
            infos: dict[int, store.FaceInfo] = {}
            for face in image.faces:
                hits: list[tuple[int, float]] = []
                for index in opened.values():
                    hits.extend(_top_subject_hits(s, index, face.embedding, k, infos))
                hits.sort(key=lambda h: -h[1])
                results.append((face, _candidates(hits, infos, k)))
        sizes = {n: len(i) for n, i in opened.items()}
        total = sum(sizes.values())
        decided = [decide(f, c, self.calibration, self.target_fpir, total) for f, c in results]
        source = self.calibration.source if self.calibration else None
        return SearchResult(image.source, model, sizes, decided, self.target_fpir, source)


def _top_subject_hits(
    s: Any, index: VectorIndex, vector: np.ndarray, k: int, infos: dict[int, store.FaceInfo]
) -> list[tuple[int, float]]:
    """Enough nearest faces that ``k`` distinct subjects are among them (when possible);
    their details are added to ``infos``."""
    n = len(index)
    if n == 0:
        return []
    fetch = min(n, k * 5)
    while True:
        ids, scores = index.search(vector, fetch)
        hits = [(int(i), float(c)) for i, c in zip(ids[0], scores[0], strict=True) if i >= 0]
        infos.update(store.face_infos(s, [h[0] for h in hits if h[0] not in infos]))
        subjects = {(infos[h[0]].subject or f"#{h[0]}") for h in hits if h[0] in infos}
        if len(subjects) >= k or fetch >= n:
            return hits
        fetch = min(n, fetch * 4)


def _candidates(
    hits: list[tuple[int, float]], infos: dict[int, store.FaceInfo], k: int
) -> list[Candidate]:
    seen: set[tuple[str, str]] = set()
    out: list[Candidate] = []
    for face_id, score in hits:
        info = infos.get(face_id)
        if info is None:
            continue
        key = (info.gallery, info.subject if info.subject is not None else f"#{face_id}")
        if key in seen:
            continue
        seen.add(key)
        out.append(
            Candidate(
                info.subject,
                score,
                info.gallery,
                info.image,
                info.source_url,
                face_id,
                info.box,
                info.quality,
                details=info.details,
            )
        )
        if len(out) == k:
            break
    return out


@dataclass(frozen=True)
class Comparison:
    score: float
    threshold: float
    a: AnalysedImage
    b: AnalysedImage
    face_a: Face
    face_b: Face
    fmr: float | None = None

    @property
    def same_person(self) -> bool:
        return self.score >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "same_person": self.same_person,
            "score": round(self.score, 4),
            "threshold": self.threshold,
            "fmr": self.fmr,
            "notice": LEAD_NOTICE,
            "a": {
                "photo": self.a.source,
                "faces_found": len(self.a.faces),
                **face_dict(self.face_a),
            },
            "b": {
                "photo": self.b.source,
                "faces_found": len(self.b.faces),
                **face_dict(self.face_b),
            },
        }


def main_face(image: AnalysedImage) -> Face:
    """The largest face of a photo (the one a 1:1 comparison is about)."""
    if not image.faces:
        raise NoFaceError("no face found in the photo", path=image.source)
    return max(image.faces, key=lambda f: f.box.width * f.box.height)


def compare(
    analyzer: Analyzer,
    a: Path,
    b: Path,
    *,
    rotations: bool = True,
    threshold: float | None = None,
    calibration: Calibration | None = None,
) -> Comparison:
    """1:1: are the largest faces of two photos the same person?"""
    img_a = analyzer.analyse_file(a, rotations=rotations)
    img_b = analyzer.analyse_file(b, rotations=rotations)
    fa, fb = main_face(img_a), main_face(img_b)
    check_same_model(fa.model, fb.model, "second photo")
    if threshold is None:
        threshold = SAME_PERSON_THRESHOLDS.get(fa.model, SAME_PERSON_THRESHOLD)
    score = cosine(fa.embedding, fb.embedding)
    fmr = calibration.fmr_at(score)[0] if calibration is not None else None
    return Comparison(score, threshold, img_a, img_b, fa, fb, fmr)

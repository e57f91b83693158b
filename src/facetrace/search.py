"""The search stage: a probe photo against galleries (1:N), and two photos (1:1).

Score convention (everywhere in facetrace): cosine similarity of the two faces' vectors,
in [-1, 1], higher is more alike. ``SAME_PERSON_THRESHOLD`` is the score above which
``compare`` says "same person"; it was chosen on LFW View 1 (the development split), see
the README. A search returns, per face found in the probe, the ``k`` best *subjects*
(each with its best-scoring gallery face); faces with no subject count one by one.

A candidate is a lead for a trained person to verify, never an identification:
``LEAD_NOTICE`` travels with every result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import sessionmaker

from facetrace import store
from facetrace.embed import check_same_model, cosine
from facetrace.errors import NoFaceError
from facetrace.gallery_index import GalleryIndexes
from facetrace.index.base import VectorIndex
from facetrace.pipeline import Analyzer
from facetrace.records import AnalysedImage, Face

SAME_PERSON_THRESHOLD = 0.9025
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
        }


def face_dict(face: Face) -> dict[str, Any]:
    return {
        "box": face.box.as_list(),
        "landmarks": face.landmarks_list(),
        "quality": face.quality.to_dict(),
    }


@dataclass(frozen=True)
class SearchResult:
    probe: str
    model: str
    galleries: dict[str, int]
    faces: list[tuple[Face, list[Candidate]]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "model": self.model,
            "galleries": [{"name": n, "faces": c} for n, c in self.galleries.items()],
            "notice": LEAD_NOTICE,
            "message": None if self.faces else "no face found in the photo",
            "faces": [
                {**face_dict(f), "candidates": [c.to_dict() for c in cands]}
                for f, cands in self.faces
            ],
        }


class Searcher:
    """Searches galleries with the faces of probe photos."""

    def __init__(
        self,
        analyzer: Analyzer,
        sessions: sessionmaker,
        indexes: GalleryIndexes,
        rotations: bool = True,
    ) -> None:
        self.analyzer = analyzer
        self.sessions = sessions
        self.indexes = indexes
        self.rotations = rotations

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
            for face in image.faces:
                hits: list[tuple[int, float]] = []
                for index in opened.values():
                    hits.extend(_top_subject_hits(s, index, face.embedding, k))
                hits.sort(key=lambda h: -h[1])
                infos = store.face_infos(s, [fid for fid, _ in hits])
                results.append((face, _candidates(hits, infos, k)))
        return SearchResult(image.source, model, {n: len(i) for n, i in opened.items()}, results)


def _top_subject_hits(
    s: Any, index: VectorIndex, vector: np.ndarray, k: int
) -> list[tuple[int, float]]:
    """Enough nearest faces that ``k`` distinct subjects are among them (when possible)."""
    n = len(index)
    if n == 0:
        return []
    fetch = min(n, k * 5)
    while True:
        ids, scores = index.search(vector, fetch)
        hits = [(int(i), float(c)) for i, c in zip(ids[0], scores[0], strict=True) if i >= 0]
        infos = store.face_infos(s, [h[0] for h in hits])
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

    @property
    def same_person(self) -> bool:
        return self.score >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "same_person": self.same_person,
            "score": round(self.score, 4),
            "threshold": self.threshold,
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
    threshold: float = SAME_PERSON_THRESHOLD,
) -> Comparison:
    """1:1: are the largest faces of two photos the same person?"""
    img_a = analyzer.analyse_file(a, rotations=rotations)
    img_b = analyzer.analyse_file(b, rotations=rotations)
    fa, fb = main_face(img_a), main_face(img_b)
    check_same_model(fa.model, fb.model, "second photo")
    return Comparison(cosine(fa.embedding, fb.embedding), threshold, img_a, img_b, fa, fb)

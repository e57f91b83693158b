"""Verification (1:1) on a labelled pair list: the LFW protocol.

Every pair gets a score, also when a detector missed a face: the photo is then embedded
from the CNN detector's box or, failing that, a fixed central box (``embeddings``), as
the protocol expects a decision for every pair. Photos that cannot be decoded score -1
(a "different" decision). The report gives, per embedding variant (``plain``, ``flip``):
10-fold mean accuracy and its standard deviation (threshold chosen on the other nine
folds), EER, TAR at FAR 1e-2 and 1e-3, the accuracy at facetrace's fixed 1:1 threshold,
and, for transparency, the accuracy when every pair with a face HOG missed counts as
wrong (what a system that gives up on such photos would score).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facetrace.evaluation import metrics
from facetrace.evaluation.embeddings import EvalFaces
from facetrace.evaluation.pairs import Pairs

VARIANTS = ("plain", "flip")


def pair_scores(faces: EvalFaces, pairs: Pairs, variant: str) -> np.ndarray:
    row = faces.row()
    ia = np.array([row[p] for p in pairs.a])
    ib = np.array([row[p] for p in pairs.b])
    emb = faces.plain if variant == "plain" else faces.flip
    scores = np.einsum("ij,ij->i", emb[ia], emb[ib]).astype(np.float64)
    failed = np.array(
        [
            faces.found_by[i] == "error" or faces.found_by[j] == "error"
            for i, j in zip(ia, ib, strict=True)
        ]
    )
    scores[failed] = -1.0
    return scores


def hog_missed(faces: EvalFaces, pairs: Pairs) -> np.ndarray:
    row = faces.row()
    return np.array(
        [
            faces.found_by[row[a]] != "hog" or faces.found_by[row[b]] != "hog"
            for a, b in zip(pairs.a, pairs.b, strict=True)
        ]
    )


def summarise(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray, fixed: float
) -> dict[str, Any]:
    gen, imp = scores[same], scores[~same]
    out = metrics.kfold_accuracy(scores, same, folds)
    eer, eer_t = metrics.eer(gen, imp)
    out["eer"] = eer
    out["eer_threshold"] = eer_t
    for far in (1e-2, 1e-3):
        tar, t = metrics.tar_at_far(gen, imp, far)
        out[f"tar_at_far_{far:g}"] = tar
        out[f"threshold_at_far_{far:g}"] = t
    out["accuracy_at_fixed_threshold"] = metrics.accuracy_at(scores, same, fixed)
    out["fixed_threshold"] = fixed
    return out


def verification_report(faces: EvalFaces, pairs: Pairs, fixed_threshold: float) -> dict[str, Any]:
    """The whole verification report for ``pairs`` (a JSON-able dict)."""
    photos = pairs.photos()
    row = faces.row()
    found: dict[str, int] = {}
    for p in photos:
        k = faces.found_by[row[p]]
        found[k] = found.get(k, 0) + 1
    missed = hog_missed(faces, pairs)
    report: dict[str, Any] = {
        "pairs": len(pairs),
        "same": int(pairs.same.sum()),
        "different": int((~pairs.same).sum()),
        "folds": int(len(np.unique(pairs.folds))),
        "photos": len(photos),
        "face_found_by": found,
        "pairs_with_a_face_hog_missed": int(missed.sum()),
        "missed_faces": "embedded from the CNN detector's box, else a central box",
        "variants": {},
    }
    for v in VARIANTS:
        scores = pair_scores(faces, pairs, v)
        s = summarise(scores, pairs.same, pairs.folds, fixed_threshold)
        counted_wrong = np.where(missed, np.where(pairs.same, -np.inf, np.inf), scores)
        strict = metrics.kfold_accuracy(counted_wrong, pairs.same, pairs.folds)
        s["mean_accuracy_missed_counted_wrong"] = strict["mean_accuracy"]
        report["variants"][v] = s
    return report


def scores_for_plots(faces: EvalFaces, pairs: Pairs, variant: str) -> tuple[np.ndarray, np.ndarray]:
    scores = pair_scores(faces, pairs, variant)
    return scores[pairs.same], scores[~pairs.same]

"""Identification (1:N, open set) from a folder-per-person photo set, as NIST measures it.

The split (seeded, reproducible): people with at least two photos are shuffled; half of
them are *enrolled* with their first photo (sorted by name) and their other photos become
*mated* probes; the other half are left out and all their photos become *non-mated*
probes. Every person with a single photo is enrolled too, as a distractor. Each probe is
searched against the whole gallery (exact search), and the report gives the CMC (rank-1,
rank-10), FNIR at FPIR 0.1 / 0.01 / 0.001 (see ``metrics``), and the FPIR measured at
the open-set threshold that facetrace's calibration sets for this gallery size.

Templates: on the people with at least three photos, enrolling the mean of the first two
photos' vectors (``template``), or a quality-weighted mean (``template_quality``), is
compared with enrolling the first photo alone, on the same probes (photos 3 and later).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facetrace.embed import normalise
from facetrace.evaluation import metrics
from facetrace.evaluation.embeddings import EvalFaces

FPIRS = (0.1, 0.01, 0.001)


@dataclass(frozen=True)
class Split:
    enrolled: dict[str, list[str]]  # person -> enrolment photos
    mated: list[tuple[str, str]]  # (photo, person)
    nonmated: list[str]


def people(paths: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for p in sorted(paths):
        out[Path(p).parent.name].append(p)
    return dict(out)


def split(paths: list[str], seed: int = 0, enrol: int = 1) -> Split:
    by = people(paths)
    multi = sorted(n for n, ps in by.items() if len(ps) > enrol)
    order = np.random.default_rng(seed).permutation(len(multi))
    left_out = {multi[i] for i in order[: len(multi) // 2]}
    enrolled: dict[str, list[str]] = {}
    mated: list[tuple[str, str]] = []
    nonmated: list[str] = []
    for name, ps in by.items():
        if name in left_out:
            nonmated.extend(ps)
        else:
            enrolled[name] = ps[:enrol]
            mated.extend((p, name) for p in ps[enrol:])
    return Split(enrolled, mated, nonmated)


def gallery_matrix(
    faces: EvalFaces, enrolled: dict[str, list[str]], variant: str, weighting: str = "mean"
) -> tuple[list[str], np.ndarray]:
    row = faces.row()
    emb = faces.plain if variant == "plain" else faces.flip
    names, vecs = [], []
    for name, ps in enrolled.items():
        idx = [row[p] for p in ps if faces.found_by[row[p]] != "error"]
        if not idx:
            continue
        w = quality_weights(faces, idx) if weighting == "quality" else np.ones(len(idx))
        names.append(name)
        vecs.append((emb[idx] * w[:, None]).sum(axis=0))
    return names, normalise(np.stack(vecs))


def quality_weights(faces: EvalFaces, idx: list[int]) -> np.ndarray:
    """More weight to larger, sharper faces (each factor between 0.2 and 1)."""
    size = np.clip(faces.face_px[idx] / 100.0, 0.2, 1.0)
    sharp = np.clip(faces.sharpness[idx] / 100.0, 0.2, 1.0)
    return size * sharp


def search(gallery: np.ndarray, probes: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(top-k gallery indices, their scores), best first, by exact search."""
    idx_out = np.zeros((len(probes), k), np.int64)
    sc_out = np.zeros((len(probes), k), np.float32)
    for start in range(0, len(probes), 2048):
        s = probes[start : start + 2048] @ gallery.T
        part = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1)
        idx_out[start : start + len(s)] = np.take_along_axis(part, order, axis=1)
        sc_out[start : start + len(s)] = np.take_along_axis(ps, order, axis=1)
    return idx_out, sc_out


def evaluate(
    faces: EvalFaces,
    sp: Split,
    variant: str,
    weighting: str = "mean",
    threshold_for: Any = None,
) -> dict[str, Any]:
    """CMC and FNIR@FPIR of one split with one embedding variant."""
    names, gallery = gallery_matrix(faces, sp.enrolled, variant, weighting)
    pos = {n: i for i, n in enumerate(names)}
    row = faces.row()
    emb = faces.plain if variant == "plain" else faces.flip
    mated = [(p, n) for p, n in sp.mated if faces.found_by[row[p]] != "error" and n in pos]
    nonmated = [p for p in sp.nonmated if faces.found_by[row[p]] != "error"]
    m_idx, m_sc = search(gallery, emb[[row[p] for p, _ in mated]])
    mates = np.array([pos[n] for _, n in mated])
    hit = m_idx == mates[:, None]
    ranks = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    rank1_scores = np.where(ranks == 1, m_sc[:, 0], -np.inf)
    _, n_sc = search(gallery, emb[[row[p] for p in nonmated]], k=1)
    nonmated_top = n_sc[:, 0]
    curve = metrics.cmc(ranks, 20)
    out: dict[str, Any] = {
        "gallery_size": len(names),
        "mated_searches": len(mated),
        "nonmated_searches": len(nonmated),
        "rank1": curve[0],
        "rank10": curve[9],
        "cmc": curve,
    }
    for f in FPIRS if len(nonmated_top) else ():
        fnir, t = metrics.fnir_at_fpir(rank1_scores, nonmated_top, f)
        out[f"fnir_at_fpir_{f:g}"] = fnir
        out[f"threshold_at_fpir_{f:g}"] = t
    if threshold_for is not None and len(nonmated_top):
        measured = {}
        for f in FPIRS:
            t = float(threshold_for(f, len(names)))
            measured[f"{f:g}"] = {
                "threshold": t,
                "measured_fpir": float((nonmated_top >= t).mean()),
                "measured_fnir": float((rank1_scores < t).mean()),
            }
            out[f"measured_fpir_at_target_{f:g}"] = measured[f"{f:g}"]["measured_fpir"]
        out["calibrated_thresholds"] = measured
    out["_nonmated_top"] = nonmated_top
    out["_mated_rank1"] = rank1_scores
    return out


def template_comparison(faces: EvalFaces, paths: list[str], variant: str) -> dict[str, Any]:
    """Enrolling 1 photo vs a template of 2 (mean, quality-weighted), same probes."""
    by = people(paths)
    eligible = {n: ps for n, ps in by.items() if len(ps) >= 3}
    singles = {n: ps[:1] for n, ps in by.items() if len(ps) < 3}
    probes = [(p, n) for n, ps in eligible.items() for p in ps[2:]]
    out = {}
    for label, enrol, weighting in (
        ("single", 1, "mean"),
        ("template", 2, "mean"),
        ("template_quality", 2, "quality"),
    ):
        enrolled = {**singles, **{n: ps[:enrol] for n, ps in eligible.items()}}
        r = evaluate(faces, Split(enrolled, probes, []), variant, weighting)
        out[label] = {
            "rank1": r["rank1"],
            "rank10": r["rank10"],
            "mated_searches": r["mated_searches"],
        }
    return out

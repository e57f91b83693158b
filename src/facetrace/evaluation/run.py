"""The evaluation jobs behind ``facetrace eval verify|identify`` and ``facetrace calibrate``:
embed (cached), score, summarise, and write ``summary.json`` and PNG plots to a folder."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facetrace import calibration as cal
from facetrace.embed import DLIB_MODEL
from facetrace.errors import FacetraceError
from facetrace.evaluation import identify, plots, verify
from facetrace.evaluation.embeddings import embed_photos
from facetrace.evaluation.pairs import read_pairs
from facetrace.search import SAME_PERSON_THRESHOLD
from facetrace.settings import Settings

Progress = Callable[[int], None]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def photos_in(folder: Path) -> list[str]:
    """Every photo in a folder-per-person tree (sorted)."""
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _write(out: Path, summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def run_verify(
    settings: Settings,
    pairs_file: Path,
    images: Path | None,
    out: Path,
    workers: int,
    progress: Callable[[int | None], Progress],
) -> dict[str, Any]:
    pairs = read_pairs(pairs_file, images)
    out.mkdir(parents=True, exist_ok=True)
    photos = pairs.photos()
    faces = embed_photos(photos, settings, workers=workers, progress=progress(len(photos)))
    summary = verify.verification_report(faces, pairs, SAME_PERSON_THRESHOLD)
    summary["pairs_file"] = str(pairs_file)
    curves = {v: verify.scores_for_plots(faces, pairs, v) for v in verify.VARIANTS}
    summary["plots"] = [
        str(plots.roc_det(curves, out / "roc_det.png", pairs_file.name)),
        str(
            plots.histogram(
                {"same person": curves["flip"][0], "different people": curves["flip"][1]},
                out / "scores.png",
                f"{pairs_file.name}: scores (flip)",
                SAME_PERSON_THRESHOLD,
            )
        ),
    ]
    _write(out, summary)
    return summary


def run_identify(
    settings: Settings,
    images: Path,
    out: Path,
    workers: int,
    progress: Callable[[int | None], Progress],
    seed: int = 0,
) -> dict[str, Any]:
    photos = photos_in(images)
    out.mkdir(parents=True, exist_ok=True)
    faces = embed_photos(photos, settings, workers=workers, progress=progress(len(photos)))
    sp = identify.split(photos, seed)
    calibrations = {}
    for v, model in (("plain", DLIB_MODEL), ("flip", DLIB_MODEL + "_flip")):
        # without a calibration the report simply has no calibrated thresholds
        with contextlib.suppress(FacetraceError):
            calibrations[v] = cal.load_calibration(settings.data_dir, model).threshold_for_fpir
    summary: dict[str, Any] = {
        "images": str(images),
        "photos": len(photos),
        "seed": seed,
        "face_found_by": faces.counts(),
        "variants": {},
    }
    hist: dict[str, np.ndarray] = {}
    for v in verify.VARIANTS:
        r = identify.evaluate(faces, sp, v, threshold_for=calibrations.get(v))
        if v == "flip":
            hist = {
                "mated (mate at rank 1)": r["_mated_rank1"],
                "non-mated (best score)": r["_nonmated_top"],
            }
        summary["variants"][v] = {k: x for k, x in r.items() if not k.startswith("_")}
    summary["templates"] = {
        v: identify.template_comparison(faces, photos, v) for v in verify.VARIANTS
    }
    summary["plots"] = [
        str(
            plots.cmc(
                {v: summary["variants"][v]["cmc"] for v in verify.VARIANTS},
                out / "cmc.png",
                f"{images.name}: CMC",
            )
        ),
        str(plots.histogram(hist, out / "scores.png", f"{images.name}: 1:N scores (flip)")),
    ]
    _write(out, summary)
    return summary


def run_calibrate(
    settings: Settings,
    images: Path,
    workers: int,
    progress: Callable[[int | None], Progress],
    model: str,
    variant: str,
    target: Path | None = None,
) -> tuple[cal.Calibration, Path]:
    """Fit score -> FMR from every pair of photos in a folder-per-person tree."""
    photos = photos_in(images)
    faces = embed_photos(photos, settings, workers=workers, progress=progress(len(photos)))
    ok = [i for i, f in enumerate(faces.found_by) if f != "error"]
    emb = (faces.plain if variant == "plain" else faces.flip)[ok]
    labels = np.array([Path(faces.paths[i]).parent.name for i in ok])
    _, ids = np.unique(labels, return_inverse=True)
    imp = np.zeros(len(cal.GRID), np.int64)
    gen = np.zeros(len(cal.GRID), np.int64)
    n_imp = n_gen = 0
    for start in range(0, len(emb), 1024):
        block = emb[start : start + 1024] @ emb.T
        rows = np.arange(start, start + len(block))
        upper = np.arange(len(emb))[None, :] > rows[:, None]  # each pair once
        same = ids[rows][:, None] == ids[None, :]
        g, i = block[upper & same], block[upper & ~same]
        gen += cal.count_at_least(g)
        imp += cal.count_at_least(i)
        n_gen += len(g)
        n_imp += len(i)
    fitted = cal.fit(imp, n_imp, gen, n_gen, model, f"{images} ({len(ok)} photos, {variant})")
    # Real searches: a gallery of one photo per person (seed 1, not the seed-0 split that
    # `eval identify` reports on), non-mated probes from the people left out.
    sp = identify.split(photos, seed=1)
    r = identify.evaluate(faces, sp, variant)
    if r.get("nonmated_searches"):
        factor, ratios = cal.search_ratios(fitted, r["_nonmated_top"], r["gallery_size"])
        fitted = dataclasses.replace(
            fitted,
            search_factor=factor,
            search_ratio=ratios,
            search_gallery_size=r["gallery_size"],
            search_nonmated=r["nonmated_searches"],
        )
    path = target or cal.calibration_file(settings.data_dir, model)
    fitted.save(path)
    return fitted, path

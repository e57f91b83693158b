"""One face per labelled photo, embedded once and cached, for the evaluations.

For each photo the face nearest the image centre is used (labelled data sets such as LFW
centre the person they name). When HOG finds no face the CNN detector is tried, then, as
the LFW protocol expects a decision for every pair, a fixed central box (LFW photos are
cropped around the face): ``found_by`` records which (``hog``, ``cnn``, ``centre``), and a
photo that cannot be decoded has ``found_by = "error"`` and no vector.

Each photo keeps two vectors: the plain one (``plain``) and the mean of the plain and the
mirrored chip's (``flip``, test-time augmentation), both unit length, so an evaluation can
compare the two without embedding again. The cache is one ``.npz`` per (photo set,
pipeline settings) under ``<data>/eval-cache``; photos are keyed by path, size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facetrace.decode import decode_file
from facetrace.detect import CnnDetector, find_faces
from facetrace.embed import DlibEmbedder, normalise
from facetrace.errors import FacetraceError
from facetrace.geometry import clip_box
from facetrace.pipeline import Analyzer
from facetrace.quality import sharpness
from facetrace.records import Box, DecodedImage
from facetrace.settings import Settings

CENTRE_FRACTION = 0.46  # side of the fallback box, as a share of the shorter image side


@dataclass(frozen=True)
class EvalFaces:
    """Vectors of a list of photos (rows in ``paths`` order)."""

    paths: list[str]
    plain: np.ndarray
    flip: np.ndarray
    found_by: list[str]
    face_px: np.ndarray
    sharpness: np.ndarray

    def row(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.found_by:
            out[f] = out.get(f, 0) + 1
        return out


_analyzer: Analyzer | None = None
_cnn: CnnDetector | None = None
_plain = DlibEmbedder(flip=False)  # both variants are made from plain vectors here


def _init(settings: Settings) -> None:
    global _analyzer, _cnn
    _analyzer = Analyzer.from_settings(settings)
    _cnn = CnnDetector(upsample=1)


def _central(img: DecodedImage) -> Box:
    side = int(min(img.width, img.height) * CENTRE_FRACTION)
    cx, cy = img.width // 2, img.height // 2
    return Box(cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)


def _nearest_centre(boxes: list[Box], img: DecodedImage) -> Box:
    cx, cy = img.width / 2, img.height / 2
    return min(
        boxes, key=lambda b: ((b.left + b.right) / 2 - cx) ** 2 + ((b.top + b.bottom) / 2 - cy) ** 2
    )


def embed_one(path: str) -> tuple[str, np.ndarray | None, np.ndarray | None, int, float]:
    """(found_by, plain, flip, face_px, sharpness) for the photo at ``path``."""
    assert _analyzer is not None and _cnn is not None
    an = _analyzer
    try:
        _, img = decode_file(Path(path), max_pixels=an.max_pixels, max_file_bytes=an.max_file_bytes)
    except FacetraceError:
        return "error", None, None, 0, 0.0
    boxes = [d.box for d in find_faces(img.pixels, an.detector, max_side=an.max_side)]
    found_by = "hog"
    if boxes:
        box = _nearest_centre(boxes, img)
    else:
        cnn = [d.box for d in _cnn.detect(img.pixels)]
        found_by, box = ("cnn", _nearest_centre(cnn, img)) if cnn else ("centre", _central(img))
    aligned = an.aligner.align(img.pixels, box)
    chip = aligned.chip
    vecs = normalise(_plain.embed([chip, np.ascontiguousarray(chip[:, ::-1])]))
    shown = clip_box(box, img.width, img.height)
    return (
        found_by,
        vecs[0],
        normalise(vecs[0] + vecs[1]),
        min(shown.width, shown.height),
        sharpness(chip),
    )


def _settings_key(settings: Settings) -> str:
    key = json.dumps([settings.detector, settings.upsample, settings.detect_max_side, "v1"])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _stat_key(path: str) -> str:
    st = os.stat(path)
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}"


_FIELDS = ("plain", "flip", "found_by", "face_px", "sharpness")


def _load_cache(cache: Path) -> dict[str, tuple[Any, ...]]:
    if not cache.is_file():
        return {}
    z = np.load(cache, allow_pickle=False)
    cols = [z[f] for f in _FIELDS]
    return {k: tuple(c[i] for c in cols) for i, k in enumerate(z["keys"])}


def _save_cache(cache: Path, rows: dict[str, tuple[Any, ...]]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    keys = list(rows)
    cols = {f: np.array([rows[k][i] for k in keys]) for i, f in enumerate(_FIELDS)}
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, keys=np.array(keys), **cols)  # type: ignore[arg-type]
    os.replace(tmp, cache)


def embed_photos(
    paths: list[str],
    settings: Settings,
    *,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> EvalFaces:
    """Vectors for ``paths``; photos embedded before (same file, same settings) come from
    the cache in ``<data>/eval-cache``, the others are embedded and added to it."""
    cache = settings.data_dir / "eval-cache" / f"faces-{_settings_key(settings)}.npz"
    rows = _load_cache(cache)
    keys = [_stat_key(p) for p in paths]
    todo = [(k, p) for k, p in zip(keys, paths, strict=True) if k not in rows]
    if progress is not None and len(todo) < len(paths):
        progress(len(paths) - len(todo))

    def take(key: str, r: tuple[str, np.ndarray | None, np.ndarray | None, int, float]) -> None:
        zero = np.zeros(128, np.float32)
        plain = r[1] if r[1] is not None else zero
        flip = r[2] if r[2] is not None else zero
        rows[key] = (plain.astype(np.float32), flip.astype(np.float32), r[0], r[3], r[4])
        if progress is not None:
            progress(1)

    if todo and workers <= 1:
        _init(settings)
        for k, p in todo:
            take(k, embed_one(p))
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, ctx, initializer=_init, initargs=(settings,)) as pool:
            for (k, _), r in zip(
                todo, pool.map(embed_one, [p for _, p in todo], chunksize=16), strict=True
            ):
                take(k, r)
    if todo:
        _save_cache(cache, rows)
    got = [rows[k] for k in keys]
    return EvalFaces(
        paths=list(paths),
        plain=np.stack([g[0] for g in got]) if got else np.zeros((0, 128), np.float32),
        flip=np.stack([g[1] for g in got]) if got else np.zeros((0, 128), np.float32),
        found_by=[str(g[2]) for g in got],
        face_px=np.array([g[3] for g in got], np.int32),
        sharpness=np.array([g[4] for g in got], np.float32),
    )

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

import numpy as np

from facetrace.decode import decode_file
from facetrace.detect import CnnDetector
from facetrace.embed import normalise
from facetrace.errors import FacetraceError
from facetrace.geometry import clip_box
from facetrace.pipeline import Analyzer
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
    faces = an.faces(img)
    found_by = "hog"
    if faces:
        box = _nearest_centre([f.box for f in faces], img)
    else:
        cnn = [d.box for d in _cnn.detect(img.pixels)]
        found_by, box = ("cnn", _nearest_centre(cnn, img)) if cnn else ("centre", _central(img))
    aligned = an.aligner.align(img.pixels, box)
    chip = aligned.chip
    vecs = normalise(an.embedder.embed([chip, np.ascontiguousarray(chip[:, ::-1])]))
    from facetrace.quality import sharpness

    shown = clip_box(box, img.width, img.height)
    return (
        found_by,
        vecs[0],
        normalise(vecs[0] + vecs[1]),
        min(shown.width, shown.height),
        sharpness(chip),
    )


def _key(paths: list[str], settings: Settings) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps([settings.detector, settings.upsample, settings.detect_max_side, "v1"]).encode()
    )
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:24]


def embed_photos(
    paths: list[str],
    settings: Settings,
    *,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> EvalFaces:
    """Vectors for ``paths``, from the cache when they were computed before."""
    cache_dir = settings.data_dir / "eval-cache"
    cache = cache_dir / f"{_key(paths, settings)}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return EvalFaces(
            list(z["paths"]),
            z["plain"],
            z["flip"],
            list(z["found_by"]),
            z["face_px"],
            z["sharpness"],
        )
    n = len(paths)
    plain = np.zeros((n, 128), np.float32)
    flip = np.zeros((n, 128), np.float32)
    found_by = ["error"] * n
    face_px = np.zeros(n, np.int32)
    sharp = np.zeros(n, np.float32)

    def take(i: int, r: tuple[str, np.ndarray | None, np.ndarray | None, int, float]) -> None:
        found_by[i], face_px[i], sharp[i] = r[0], r[3], r[4]
        if r[1] is not None and r[2] is not None:
            plain[i], flip[i] = r[1], r[2]
        if progress is not None:
            progress(1)

    if workers <= 1:
        _init(settings)
        for i, p in enumerate(paths):
            take(i, embed_one(p))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, ctx, initializer=_init, initargs=(settings,)) as pool:
            for i, r in enumerate(pool.map(embed_one, paths, chunksize=16)):
                take(i, r)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, paths=np.array(paths), plain=plain, flip=flip, found_by=np.array(found_by),
             face_px=face_px, sharpness=sharp)  # fmt: skip
    os.replace(tmp, cache)
    return EvalFaces(paths, plain, flip, found_by, face_px, sharp)

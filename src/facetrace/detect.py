"""The detect stage: find face boxes in an image.

Backends sit behind the ``Detector`` protocol and load their model on first use, never at
import. ``hog`` is dlib's HOG + linear SVM frontal detector (fast on a CPU, misses faces
smaller than about 80 px unless the image is upsampled, and faces turned more than about
30 degrees); ``cnn`` is dlib's MMOD CNN (more robust to pose and small faces, ~20x slower).

``find_faces`` adds what both need: detection on a downscaled copy of huge images (boxes
are mapped back to original pixels), and optionally a search of the image turned by 90,
180 and 270 degrees for faces that lie on their side or upside down, with duplicate
detections across turns merged (highest detector score wins). Detector scores are the
backends' own (HOG: SVM margin, > 0 is a detection; CNN: MMOD confidence).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from facetrace.decode import downscale, rotate
from facetrace.geometry import ROTATIONS, box_from_rotated, clip_box, scale_box
from facetrace.models import CNN_DETECTOR, model_file
from facetrace.records import Box, Detection

MERGE_IOU = 0.3
CONTAINED = 0.5
# Faces found only on a turned copy must score at least this (HOG margin): three extra
# searches triple the chances of a false detection, and weak ones are mostly wrong.
TURNED_MIN_SCORE = 0.3


class Detector(Protocol):
    """Finds upright faces in an RGB image; boxes in that image's pixels."""

    name: str

    def detect(self, pixels: np.ndarray) -> list[Detection]: ...


class HogDetector:
    """dlib's HOG frontal face detector."""

    name = "hog"

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        self.upsample = upsample
        self.threshold = threshold
        self._model: Any = None

    def detect(self, pixels: np.ndarray) -> list[Detection]:
        import dlib

        if self._model is None:
            self._model = dlib.get_frontal_face_detector()
        rects, scores, _ = self._model.run(pixels, self.upsample, self.threshold)
        return [
            Detection(Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1), s)
            for r, s in zip(rects, scores, strict=True)
        ]


class CnnDetector:
    """dlib's MMOD CNN face detector (weights from face-recognition-models)."""

    name = "cnn"

    def __init__(self, upsample: int = 1) -> None:
        self.upsample = upsample
        self._model: Any = None

    def detect(self, pixels: np.ndarray) -> list[Detection]:
        import dlib

        if self._model is None:
            self._model = dlib.cnn_face_detection_model_v1(str(model_file(CNN_DETECTOR)))
        found = self._model(pixels, self.upsample)
        out = []
        for d in found:
            r = d.rect
            box = Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1)
            out.append(Detection(box, float(d.confidence)))
        return out


class UpsampleIfNone:
    """Looks at the photo's own size first and upsamples only when no face was found.

    Upsampling (to find faces smaller than about 80 px) costs HOG four times the work of
    the photo itself. Gallery photos are mostly portraits whose subject is large, so for
    ingest facetrace searches the upsampled photo only when the plain one shows no face:
    a photo with a large face then keeps it, and any much smaller faces around it are
    not looked for (they would be stored unnamed anyway). Probes are never treated so.
    """

    def __init__(self, coarse: Detector, fine: Detector) -> None:
        self.coarse = coarse
        self.fine = fine
        self.name = coarse.name

    def detect(self, pixels: np.ndarray) -> list[Detection]:
        return self.coarse.detect(pixels) or self.fine.detect(pixels)


def make_detector(name: str, upsample: int, *, upsample_if_none: bool = False) -> Detector:
    """The detector called ``name``; with ``upsample_if_none`` (and ``upsample`` > 0) it
    upsamples only photos where the plain size shows no face (``UpsampleIfNone``)."""
    if upsample_if_none and upsample > 0:
        return UpsampleIfNone(make_detector(name, 0), make_detector(name, upsample))
    """The detector called ``name`` (``hog`` or ``cnn``)."""
    if name == "cnn":
        return CnnDetector(upsample)
    return HogDetector(upsample)


def find_faces(
    pixels: np.ndarray, detector: Detector, *, max_side: int, rotations: bool = False
) -> list[Detection]:
    """Every face in ``pixels``, best detector score first.

    Boxes are in the coordinates of ``pixels`` as the detector drew them: they may cross
    the image border (alignment works best from the detector's own box); clip them with
    ``facetrace.geometry.clip_box`` for display.
    """
    h, w = pixels.shape[:2]
    small, factor = downscale(pixels, max_side)
    sh, sw = small.shape[:2]
    found: list[Detection] = []
    for rotation in ROTATIONS if rotations else (0,):
        turned = rotate(small, rotation)
        for det in detector.detect(turned):
            if rotation and det.score < TURNED_MIN_SCORE:
                continue
            box = scale_box(box_from_rotated(det.box, sw, sh, rotation), 1.0 / factor)
            shown = clip_box(box, w, h)
            if shown.width > 1 and shown.height > 1:
                found.append(Detection(box, det.score, rotation))
    return merge_detections(found)


def merge_detections(found: list[Detection], iou: float = MERGE_IOU) -> list[Detection]:
    """Greedy non-maximum suppression: keep the best-scoring of overlapping boxes.

    Two boxes are one face when their IoU is at least ``iou``, or, when they were found at
    different rotations, when most of the smaller lies inside the larger (a turned copy
    of a face often yields a smaller, shifted box around the same face).
    """
    kept: list[Detection] = []
    for det in sorted(found, key=lambda d: (-d.score, d.rotation)):
        if not any(_same_face(det, k, iou) for k in kept):
            kept.append(det)
    return kept


def _same_face(a: Detection, b: Detection, iou: float) -> bool:
    if a.box.iou(b.box) >= iou:
        return True
    return a.rotation != b.rotation and a.box.overlap_of_smaller(b.box) >= CONTAINED

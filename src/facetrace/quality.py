"""The quality stage: how usable a detected face is, as a record a reviewer can read.

- ``face_px``: the shorter side of the face box in original pixels.
- ``sharpness``: variance of the Laplacian of the grey 150 x 150 aligned chip (a blur
  measure; below ``BLUR`` the face is likely too soft to compare reliably).
- ``detector_score``: the detector's own confidence (HOG margin or CNN confidence).
- ``yaw_deg`` / ``roll_deg``: a rough head pose from the 5 landmarks. Roll is the angle of
  the line through the eyes; yaw comes from how far the nose base sits off the middle of
  the eyes along that line (0 = frontal; sign = direction). It is an estimate, good to
  about 10-15 degrees near frontal, and saturates at +-90.
- ``warnings``: plain words for each threshold crossed (small, blurred, turned away,
  weak detection). Warnings never drop a face; the decision is the reviewer's.
"""

from __future__ import annotations

import math

import numpy as np

from facetrace.records import Box, Quality

SMALL_PX = 40
BLUR = 40.0
YAW_MAX = 45.0
WEAK_HOG = 0.2


def sharpness(chip: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey chip."""
    grey = chip.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())


def pose(landmarks: tuple[tuple[float, float], ...]) -> tuple[float, float]:
    """(yaw, roll) in degrees from dlib's 5 points (two per eye, then the nose base)."""
    p = np.asarray(landmarks, dtype=np.float64)
    eye_a, eye_b, nose = p[0:2].mean(axis=0), p[2:4].mean(axis=0), p[4]
    axis = eye_a - eye_b
    dist = float(np.linalg.norm(axis))
    if dist < 1e-6:
        return 0.0, 0.0
    unit = axis / dist
    roll = math.degrees(math.atan2(unit[1], unit[0]))
    offset = float(np.dot(nose - (eye_a + eye_b) / 2, unit)) / (dist / 2)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, offset))))
    return round(yaw, 1), round(roll, 1)


def assess(
    box: Box,
    chip: np.ndarray,
    landmarks: tuple[tuple[float, float], ...],
    detector_score: float,
    rotation: int = 0,
) -> Quality:
    """The quality record of one face."""
    face_px = min(box.width, box.height)
    sharp = round(sharpness(chip), 1)
    yaw, roll = pose(landmarks)
    warnings = []
    if face_px < SMALL_PX:
        warnings.append(f"small face ({face_px} px < {SMALL_PX})")
    if sharp < BLUR:
        warnings.append(f"blurred (sharpness {sharp} < {BLUR})")
    if abs(yaw) > YAW_MAX:
        warnings.append(f"turned away (yaw about {yaw:.0f} degrees)")
    if detector_score < WEAK_HOG:
        warnings.append(f"weak detection (score {detector_score:.2f})")
    return Quality(
        face_px=face_px,
        sharpness=sharp,
        detector_score=round(float(detector_score), 3),
        yaw_deg=yaw,
        roll_deg=roll,
        rotation=rotation,
        warnings=tuple(warnings),
    )

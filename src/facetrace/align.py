"""The align stage: dlib's 5-point landmarks and the aligned face chip.

The chip is what the embedder sees: 150 x 150 RGB, eyes and nose at fixed places, with
dlib's default padding of 0.25 around the face (the same chip ``face_recognition`` and
dlib's own ``compute_face_descriptor(image, shape)`` make, bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facetrace.models import LANDMARKS_5, model_file
from facetrace.records import Box

CHIP_SIZE = 150
CHIP_PADDING = 0.25


@dataclass(frozen=True)
class Aligned:
    """An aligned chip and the landmarks it was cut with (in the given image's pixels)."""

    chip: np.ndarray
    landmarks: tuple[tuple[float, float], ...]


class Aligner:
    """5-point landmark predictor and chip extraction; loads the model on first use."""

    def __init__(self) -> None:
        self._predictor: Any = None

    def align(self, pixels: np.ndarray, box: Box) -> Aligned:
        import dlib

        if self._predictor is None:
            self._predictor = dlib.shape_predictor(str(model_file(LANDMARKS_5)))
        rect = dlib.rectangle(box.left, box.top, box.right - 1, box.bottom - 1)
        shape = self._predictor(pixels, rect)
        chip = dlib.get_face_chip(pixels, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        points = tuple((float(p.x), float(p.y)) for p in shape.parts())
        return Aligned(np.ascontiguousarray(chip), points)

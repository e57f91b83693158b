"""Small frozen records passed between pipeline stages.

Conventions, stated once for the whole package:
- A box is ``(left, top, right, bottom)`` in pixels of the *original* decoded image after
  EXIF orientation, right and bottom exclusive.
- Landmarks are dlib's 5 points ``(x, y)`` in the same coordinates: two corners of each eye
  and the base of the nose.
- ``embedding`` is the model's raw output (float32). Scores are computed on L2-normalised
  embeddings: the score of two faces is their cosine similarity, in [-1, 1], higher means
  more alike. See ``facetrace.embed.cosine``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Box:
    """A face box in original image pixels."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def as_list(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other`` (0 when disjoint)."""
        w = min(self.right, other.right) - max(self.left, other.left)
        h = min(self.bottom, other.bottom) - max(self.top, other.top)
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    def overlap_of_smaller(self, other: Box) -> float:
        """The share of the smaller box's area that lies inside the other box."""
        w = min(self.right, other.right) - max(self.left, other.left)
        h = min(self.bottom, other.bottom) - max(self.top, other.top)
        smaller = min(self.width * self.height, other.width * other.height)
        return (w * h) / smaller if w > 0 and h > 0 and smaller > 0 else 0.0


@dataclass(frozen=True)
class DecodedImage:
    """An image as RGB pixels (H x W x 3, uint8), upright after EXIF orientation."""

    pixels: np.ndarray
    format: str
    source: str

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


@dataclass(frozen=True)
class Detection:
    """A face found by a detector.

    ``rotation`` is how many degrees (0, 90, 180, 270, counter-clockwise) the image was
    turned for the detector to find the face upright; ``box`` is in original coordinates.
    """

    box: Box
    score: float
    rotation: int = 0


@dataclass(frozen=True)
class Quality:
    """What a reviewer needs to judge a face: size, sharpness, detector score and pose."""

    face_px: int
    sharpness: float
    detector_score: float
    yaw_deg: float
    roll_deg: float
    rotation: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d


@dataclass(frozen=True)
class Face:
    """One analysed face: where it is, how good it is and its embedding."""

    box: Box
    landmarks: tuple[tuple[float, float], ...]
    quality: Quality
    embedding: np.ndarray
    model: str

    def landmarks_list(self) -> list[list[float]]:
        return [[round(x, 1), round(y, 1)] for x, y in self.landmarks]


@dataclass(frozen=True)
class AnalysedImage:
    """The result of running the pipeline on one image."""

    source: str
    sha256: str
    width: int
    height: int
    format: str
    faces: tuple[Face, ...]

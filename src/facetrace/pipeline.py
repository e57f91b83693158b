"""One image through the stages: decode -> detect -> align -> quality -> embed.

``Analyzer`` owns one instance of each stage's backend; models load on first use, so an
``Analyzer`` is cheap to build and each worker process builds its own. Faces come back in
reading order (left to right, then top to bottom), boxes and landmarks in original pixels.
Faces found on a turned copy of the image (see ``facetrace.detect``) are aligned and
embedded on that upright copy. Landmarks are predicted from the detector's own box, even
where it crosses the image border; the box reported is clipped to the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facetrace.align import Aligner
from facetrace.decode import decode_bytes, read_file, rotate, sha256_hex
from facetrace.detect import Detector, find_faces, make_detector
from facetrace.embed import DlibEmbedder, Embedder, make_embedder
from facetrace.geometry import box_to_rotated, clip_box, from_rotated
from facetrace.quality import assess
from facetrace.records import AnalysedImage, DecodedImage, Face
from facetrace.settings import Settings


@dataclass
class Analyzer:
    """The face pipeline with its backends; build with ``Analyzer.from_settings``."""

    detector: Detector
    embedder: Embedder = field(default_factory=DlibEmbedder)
    aligner: Aligner = field(default_factory=Aligner)
    max_side: int = 1600
    max_pixels: int = 100_000_000
    max_file_bytes: int = 200 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings, *, ingest: bool = False) -> Analyzer:
        """The pipeline the settings describe; ``ingest`` applies ``ingest_upsample``."""
        if not ingest:
            detector = make_detector(settings.detector, settings.upsample)
        elif settings.ingest_upsample == "auto":
            detector = make_detector(settings.detector, settings.upsample, upsample_if_none=True)
        else:
            detector = make_detector(settings.detector, int(settings.ingest_upsample))
        return cls(
            detector=detector,
            embedder=make_embedder(settings.embedder, settings.flip),
            max_side=settings.detect_max_side,
            max_pixels=settings.max_pixels,
            max_file_bytes=settings.max_file_bytes,
        )

    @property
    def model(self) -> str:
        return self.embedder.model

    def faces(self, image: DecodedImage, *, rotations: bool = False) -> list[Face]:
        """Every face in ``image``, analysed and embedded."""
        pixels = image.pixels
        h, w = pixels.shape[:2]
        found = find_faces(pixels, self.detector, max_side=self.max_side, rotations=rotations)
        turned: dict[int, np.ndarray] = {}
        pending = []
        for det in found:
            if det.rotation not in turned:
                turned[det.rotation] = rotate(pixels, det.rotation)
            box_r = box_to_rotated(det.box, w, h, det.rotation)
            aligned = self.aligner.align(turned[det.rotation], box_r)
            shown = clip_box(det.box, w, h)
            quality = assess(shown, aligned.chip, aligned.landmarks, det.score, det.rotation)
            points = tuple(from_rotated(x, y, w, h, det.rotation) for x, y in aligned.landmarks)
            pending.append((shown, points, quality, aligned.chip))
        vectors = self.embedder.embed([p[3] for p in pending])
        faces = [
            Face(box, points, quality, vec, self.embedder.model)
            for (box, points, quality, _), vec in zip(pending, vectors, strict=True)
        ]
        faces.sort(key=lambda f: (f.box.left, f.box.top))
        return faces

    def analyse_bytes(self, data: bytes, source: str, *, rotations: bool = False) -> AnalysedImage:
        """Decode ``data`` (named ``source`` in errors) and analyse every face in it."""
        image = decode_bytes(data, source, max_pixels=self.max_pixels)
        return AnalysedImage(
            source=source,
            sha256=sha256_hex(data),
            width=image.width,
            height=image.height,
            format=image.format,
            faces=tuple(self.faces(image, rotations=rotations)),
        )

    def analyse_file(self, path: Path, *, rotations: bool = False) -> AnalysedImage:
        """Read, decode and analyse the photo at ``path``."""
        data = read_file(path, max_file_bytes=self.max_file_bytes)
        return self.analyse_bytes(data, str(path), rotations=rotations)

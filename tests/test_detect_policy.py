"""Ingest's detection policy: upsample a photo only when its own size shows no face.

Real photos: a portrait keeps the face found without upsampling, and a photo shrunk until
its face is too small for HOG at its own size is still found by upsampling it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from facetrace.detect import HogDetector, UpsampleIfNone, find_faces, make_detector
from facetrace.pipeline import Analyzer
from facetrace.settings import Settings


def pixels(path: Path, scale: float = 1.0) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    if scale != 1.0:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    return np.asarray(im)


def test_portrait_uses_the_plain_size_only(faces_dir: Path) -> None:
    photo = pixels(faces_dir / "lfw/images/Aaron_Peirsol/Aaron_Peirsol_0001.jpg")
    calls = []

    class Counting(HogDetector):
        def detect(self, px: np.ndarray):  # type: ignore[no-untyped-def]
            calls.append(self.upsample)
            return super().detect(px)

    found = find_faces(photo, UpsampleIfNone(Counting(0), Counting(1)), max_side=1600)
    assert len(found) == 1 and calls == [0]


def test_small_face_is_found_by_upsampling(faces_dir: Path) -> None:
    photo = pixels(faces_dir / "lfw/images/Aaron_Peirsol/Aaron_Peirsol_0001.jpg", scale=0.4)
    assert find_faces(photo, make_detector("hog", 0), max_side=1600) == []
    auto = make_detector("hog", 1, upsample_if_none=True)
    assert len(find_faces(photo, auto, max_side=1600)) == 1


def test_policy_applies_to_ingest_only() -> None:
    settings = Settings.load(env={}, data_dir="/x")
    assert isinstance(Analyzer.from_settings(settings, ingest=True).detector, UpsampleIfNone)
    probe = Analyzer.from_settings(settings).detector
    assert isinstance(probe, HogDetector) and probe.upsample == 1
    fixed = replace(settings, ingest_upsample="1")
    assert not isinstance(Analyzer.from_settings(fixed, ingest=True).detector, UpsampleIfNone)
    assert make_detector("hog", 0, upsample_if_none=True).__class__ is HogDetector

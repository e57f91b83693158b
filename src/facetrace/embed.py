"""The embed stage: an aligned face chip becomes a vector.

Backends sit behind the ``Embedder`` protocol, load lazily and name themselves with a
``model`` string that is stored beside every vector they make; vectors of different models
are never compared (``check_same_model``). The default is dlib's ResNet (128-d, trained with
a metric loss so that Euclidean distance < 0.6 between raw vectors means "same person").

Score convention for all of facetrace: cosine similarity of the two vectors, in [-1, 1],
higher is more alike (``cosine``). For dlib's vectors, whose norms are close to each other,
dlib's distance 0.6 corresponds to a cosine similarity of about 0.90.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from facetrace.errors import ModelMismatchError
from facetrace.models import RECOGNITION, model_file

DLIB_MODEL = "dlib_resnet_v1"


class Embedder(Protocol):
    """Turns aligned 150 x 150 RGB chips into vectors of ``dim`` floats."""

    model: str
    dim: int

    @property
    def variant(self) -> str: ...

    def embed(self, chips: list[np.ndarray]) -> np.ndarray: ...


class DlibEmbedder:
    """dlib's ResNet face descriptor, weights from face-recognition-models.

    With ``flip`` (test-time augmentation) a face's vector is the sum of the unit vectors
    of its chip and of the chip mirrored left to right: a different model as far as
    stored vectors go (``dlib_resnet_v1_flip``), never mixed with plain ones.
    """

    dim = 128

    def __init__(self, jitters: int = 0, flip: bool = False) -> None:
        self.jitters = jitters
        self.flip = flip
        self.model = DLIB_MODEL + ("_flip" if flip else "")
        self._net: Any = None

    @property
    def variant(self) -> str:
        return "flip" if self.flip else "plain"

    def _raw(self, chips: list[np.ndarray]) -> np.ndarray:
        import dlib

        if self._net is None:
            self._net = dlib.face_recognition_model_v1(str(model_file(RECOGNITION)))
        if self.jitters:
            rows = [self._net.compute_face_descriptor(c, self.jitters) for c in chips]
        else:
            rows = self._net.compute_face_descriptor(chips)
        return np.asarray([np.asarray(r) for r in rows], dtype=np.float32)

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        """float32 vectors, one row per chip (raw dlib output unless ``flip``)."""
        return embed_chips(self._raw, chips, flip=self.flip, dim=self.dim)


def embed_chips(
    raw: Callable[[list[np.ndarray]], np.ndarray], chips: list[np.ndarray], *, flip: bool, dim: int
) -> np.ndarray:
    """Vectors of ``chips`` from a backend's ``raw`` (one call for all chips): its rows as they
    are, or with ``flip`` the sum of the unit vectors of each chip and of its mirror image."""
    if not chips:
        return np.zeros((0, dim), np.float32)
    if not flip:
        return raw(chips)
    mirrored = [np.ascontiguousarray(c[:, ::-1]) for c in chips]
    both = normalise(raw(chips + mirrored))
    return both[: len(chips)] + both[len(chips) :]


def make_embedder(name: str, flip: bool) -> Embedder:
    """``onnx`` (dlib's network run by onnxruntime) or ``dlib``; the same vectors and model
    ids either way (``tests/test_embed_onnx.py`` holds them within 1e-4)."""
    if name == "onnx":
        from facetrace.embed_onnx import OnnxDlibEmbedder

        return OnnxDlibEmbedder(flip=flip)
    return DlibEmbedder(flip=flip)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The facetrace score of two vectors: cosine similarity, higher is more alike."""
    return float(np.dot(normalise(a), normalise(b)))


def check_same_model(expected: str, actual: str, what: str = "gallery") -> None:
    """Refuse to compare vectors made by different models."""
    if expected != actual:
        raise ModelMismatchError(
            f"the {what} was embedded with model {actual!r} but the probe with {expected!r}; "
            "scores across models mean nothing. Re-ingest or use the same model"
        )

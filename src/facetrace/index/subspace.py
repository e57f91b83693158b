"""The linear subspace a trained index keeps its faces in: fewer dimensions, the same scores.

dlib's 128-number face embeddings do not fill their 128 dimensions. The 13,294 LFW faces
lie within 1e-4 (of their unit length) of a subspace of 84 dimensions, and faces held out
of the fit do too (largest distance 4.7e-5); past the 77th dimension the singular values
of the faces fall from 1.2 to 0.19, and on to 1e-4 by the 90th. Split a face ``x`` and a
query ``q`` into their parts in such a subspace and out of it: ``x . q = x_s . q_s + x_o
. q_o``, so scoring them on their coordinates in the subspace is off by at most ``|x_o|
|q_o|``: about 1e-9 for two dlib faces. An index that stores and scans the coordinates
instead of the vectors stores and scans a third less, at the same scores.

- ``Subspace.fit``: the fewest dimensions (an even number, for 2-dimension codes) that
  hold every face of a sample of the gallery within ``FIT_TOL``: eigenvectors of the
  sample's uncentred second moment (the subspace must hold the faces themselves, not only
  their spread about the mean). ``None`` when the sample needs all the dimensions, as
  uniform random vectors do.
- The basis is then turned by a fixed random rotation within the subspace. In the
  eigenvector basis the first coordinate is the faces' common direction (cosine 0.92 to
  every dlib face) and each following one holds less spread: product codes of 2
  dimensions each spend the same 16 centres on very unequal blocks and lose recall (ScaNN
  at 200,000 faces, 128 of 1,024 leaves: recall@10 0.945 in that basis, 0.993 turned).
- ``split``: each face's coordinates and its distance from the subspace. A face further
  than ``OUTSIDE_TOL`` (a face of another kind than the ones fitted) is for the index to
  keep whole, elsewhere (``ScannIndex`` keeps such faces in an exact index beside it).
"""

from __future__ import annotations

import numpy as np

FIT_TOL = 1e-4  # largest distance of a sampled face from the fitted subspace
OUTSIDE_TOL = 1e-3  # a face further than this is not stored by its coordinates
_SAMPLE = 65_536  # faces the fit looks at, spread evenly over those it is given
_SEED = 20_261_129  # of the rotation within the subspace (any fixed value)


class Subspace:
    """An orthonormal basis (``dim`` x ``dims``) of the subspace faces are stored in."""

    def __init__(self, basis: np.ndarray) -> None:
        self.basis = np.ascontiguousarray(basis, dtype=np.float32)

    @property
    def dims(self) -> int:
        return int(self.basis.shape[1])

    @classmethod
    def fit(cls, vectors: np.ndarray, tol: float = FIT_TOL) -> Subspace | None:
        """The subspace of the fewest dimensions holding every sampled unit row of
        ``vectors`` within ``tol``, or ``None`` if that takes all of them."""
        n, dim = vectors.shape
        sample = np.asarray(vectors[:: max(1, n // _SAMPLE)][:_SAMPLE], np.float64)
        _, eigvecs = np.linalg.eigh(sample.T @ sample)
        eigvecs = eigvecs[:, ::-1]  # largest first
        coords = sample @ eigvecs
        # beyond[:, j]: each face's squared distance from the first j eigenvectors' span
        beyond = np.cumsum((coords**2)[:, ::-1], axis=1)[:, ::-1]
        enough = np.flatnonzero(np.sqrt(beyond.max(axis=0)) <= tol)
        dims = int(enough[0]) if enough.size else dim
        dims = max(2, dims + dims % 2)
        if dims >= dim:
            return None
        turn, _ = np.linalg.qr(np.random.default_rng(_SEED).standard_normal((dims, dims)))
        return cls(eigvecs[:, :dims] @ turn)

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Coordinates of ``vectors`` (rows) in the subspace, float32, contiguous."""
        return np.ascontiguousarray(np.asarray(vectors, np.float32) @ self.basis)

    def split(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates of ``vectors`` and the distance of each from the subspace."""
        coords = self.project(vectors)
        return coords, np.linalg.norm(vectors - coords @ self.basis.T, axis=1)


def merged(
    ids: tuple[np.ndarray, np.ndarray], scores: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The best of two results for the same queries (ids ``-1`` and scores ``-inf`` as
    padding), as many a row as the first has: best first, equal scores in id order."""
    k = ids[0].shape[1]
    all_ids, all_scores = np.hstack(ids), np.hstack(scores)
    order = np.lexsort((all_ids, -all_scores), axis=-1)[:, :k]
    return (
        np.take_along_axis(all_ids, order, axis=1),
        np.take_along_axis(all_scores, order, axis=1),
    )

"""Faces stored as coordinates in the subspace they fill, and the faces kept whole.

Real dlib faces from LFW show the property the ``scann`` backend relies on: a subspace
fitted on some faces holds other faces to well within ``OUTSIDE_TOL``. The index tests use
face-like vectors made to lie in 40 of 128 dimensions, then add vectors that do not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetrace.errors import IndexCorruptError
from facetrace.index import index_files, open_index
from facetrace.index.base import read_saved
from facetrace.index.scann_index import ScannIndex
from facetrace.index.subspace import FIT_TOL, OUTSIDE_TOL, Subspace, merged
from tests.test_faiss_ivf import TRAIN_AT, recall_at_10
from tests.test_index_contract import DIM, faces, unit

RANK = 40
LFW_FACES = 130  # one photo each of this many people: 100 to fit, 30 held out


def flat(n: int, seed: int, people: int | None = None, draw: int = 0) -> np.ndarray:
    """``faces`` moved into one fixed subspace of ``RANK`` dimensions, unit length."""
    basis, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((DIM, RANK)))
    x = unit(faces(n, people=people or n // 20, seed=seed, draw=draw))
    return unit(x @ basis @ basis.T).astype(np.float32)


def test_fit_finds_the_rank_and_an_orthonormal_basis() -> None:
    x = flat(3000, seed=1)
    sub = Subspace.fit(x)
    assert sub is not None and sub.dims == RANK
    np.testing.assert_allclose(sub.basis.T @ sub.basis, np.eye(RANK), atol=1e-5)
    coords, distance = sub.split(x)
    assert coords.shape == (3000, RANK) and coords.flags.c_contiguous
    assert distance.max() < FIT_TOL
    q = flat(50, seed=2)
    np.testing.assert_allclose(coords @ sub.project(q).T, x @ q.T, atol=1e-5)
    # the turn spreads the faces' common direction: no coordinate holds most of a face
    assert np.abs(coords).mean(axis=0).max() < 0.5
    assert Subspace.fit(unit(faces(3000, seed=3)).astype(np.float32)) is None  # full rank


def test_an_odd_rank_is_rounded_up_for_two_dimension_codes() -> None:
    x = unit(np.random.default_rng(4).standard_normal((500, 7)) @ np.eye(7, DIM))
    sub = Subspace.fit(x.astype(np.float32))
    assert sub is not None and sub.dims == 8


def test_merged_keeps_the_best_of_both_in_order() -> None:
    ids = (np.array([[5, 2, -1]]), np.array([[9, 1, 3]]))
    scores = (np.array([[0.9, 0.5, -np.inf]]), np.array([[0.7, 0.5, 0.1]]))
    got_ids, got_scores = merged(ids, scores)
    assert got_ids.tolist() == [[5, 9, 1]] and got_scores.tolist() == [[0.9, 0.7, 0.5]]


def test_real_dlib_faces_lie_in_a_subspace_fitted_on_others(faces_dir: Path, analyzer) -> None:  # type: ignore[no-untyped-def]
    """LFW photos of different people: 100 fit the subspace; the others lie within
    ``OUTSIDE_TOL`` of it, so an index would store all of them by their coordinates."""
    from facetrace.decode import decode_file

    vectors = []
    for person in sorted((faces_dir / "lfw" / "images").iterdir()):
        photo = min(person.glob("*.jpg"), default=None)
        if photo is None:
            continue
        _, img = decode_file(photo, max_pixels=10**8, max_file_bytes=10**8)
        found = analyzer.faces(img)
        if found:
            vectors.append(found[0].embedding)
        if len(vectors) == LFW_FACES:
            break
    if len(vectors) < LFW_FACES:
        pytest.skip(f"only {len(vectors)} LFW people with a face found under {faces_dir}")
    x = unit(np.asarray(vectors, np.float32))
    sub = Subspace.fit(x[:100])
    assert sub is not None and 70 <= sub.dims <= 96  # 82 on these; 84 on all of LFW
    _, distance = sub.split(x[100:])
    assert distance.max() < OUTSIDE_TOL


def trained_flat(n: int = 4000) -> tuple[ScannIndex, np.ndarray]:
    vectors = flat(n, seed=31)
    index = ScannIndex(DIM, train_at=TRAIN_AT, nprobe=16)
    index.add(np.arange(n, dtype=np.int64), vectors)
    assert index.exact is None and index.subspace is not None and index.outside is None
    return index, vectors


def check_exact_scores(index: ScannIndex, vectors: dict[int, np.ndarray], q: np.ndarray) -> None:
    got, scores = index.search(q, 10)
    exact = np.array([[vectors[i] @ row for i in ids] for ids, row in zip(got, q, strict=True)])
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_scann_stores_coordinates_and_scores_exactly() -> None:
    index, vectors = trained_flat()
    assert index.subspace is not None and index.subspace.dims == RANK
    assert f"input_dim: {RANK}" in index._native.config()
    queries = flat(300, seed=31, people=200, draw=1)
    assert recall_at_10(index, np.arange(4000), vectors, queries) >= 0.97
    check_exact_scores(index, dict(enumerate(vectors)), queries)


def test_faces_off_the_subspace_are_kept_whole_and_found(tmp_path: Path) -> None:
    index, vectors = trained_flat()
    whole = unit(faces(60, seed=40)).astype(np.float32)  # all 128 dimensions
    index.add(np.arange(10_000, 10_060), whole)
    assert index.outside is not None and len(index.outside) == 60 and len(index) == 4060
    assert sorted(index.ids().tolist()) == [*range(4000), *range(10_000, 10_060)]
    np.testing.assert_array_equal(index.search(whole, 1)[0][:, 0], np.arange(10_000, 10_060))
    known = {**dict(enumerate(vectors)), **dict(zip(range(10_000, 10_060), whole, strict=True))}
    check_exact_scores(index, known, np.vstack([whole[:20], vectors[:20]]))
    # remove and upsert reach the faces kept whole; a face moved into the subspace leaves
    assert index.remove(np.array([10_000, 10_001, 5])) == 3 and len(index) == 4057
    index.add(np.array([10_002]), vectors[6:7])
    assert len(index.outside) == 57 and index.search(vectors[6], 2)[0][0].tolist() in (
        [6, 10_002],
        [10_002, 6],
    )
    index.save(tmp_path / "g.index")
    opened = open_index("scann", tmp_path / "g.index", DIM)
    assert isinstance(opened, ScannIndex) and len(opened) == 4057
    assert opened.outside is not None and len(opened.outside) == 57
    assert opened.subspace is not None
    np.testing.assert_array_equal(opened.subspace.basis, index.subspace.basis)
    q = np.vstack([whole[3:20], vectors[7:30]])
    (ids, scores), (ids_opened, scores_opened) = index.search(q, 10), opened.search(q, 10)
    np.testing.assert_array_equal(ids_opened, ids)
    # the same exact cosines, summed by ScaNN's batched threads in an order of their own:
    # one of 400 differed in its last bit (6e-8) in one CI run
    np.testing.assert_allclose(scores_opened, scores, rtol=0, atol=1e-6)


def test_a_missing_or_damaged_basis_is_a_corrupt_index(tmp_path: Path) -> None:
    index, _ = trained_flat(3000)
    index.save(tmp_path / "g.index")
    basis = next(f for f in index_files(tmp_path / "g.index") if f.name.endswith("basis.npy"))
    np.save(basis, np.zeros((DIM, RANK + 2), np.float32))
    with pytest.raises(IndexCorruptError, match="basis"):
        open_index("scann", tmp_path / "g.index", DIM, verify=False)
    with pytest.raises(IndexCorruptError):
        open_index("scann", tmp_path / "g.index", DIM)  # the size or SHA-256 differs
    basis.unlink()
    with pytest.raises(IndexCorruptError):
        read_saved(tmp_path / "g.index", backend="scann", dim=DIM)


def test_full_rank_vectors_train_without_a_subspace() -> None:
    index = ScannIndex(DIM, train_at=TRAIN_AT, nprobe=16)
    index.add(np.arange(3000), faces(3000, seed=31))
    assert index.exact is None and index.subspace is None
    assert f"input_dim: {DIM}" in index._native.config()

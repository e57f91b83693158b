"""The ``ivf-pq`` backend past its training threshold (the contract tests stay below it).

``train_at`` is lowered so that a few thousand of the contract tests' face-like vectors
train the lists and product codes. Scores are re-ranked exactly, so they must equal the
exact backend's for every face returned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetrace.errors import ConfigError, IndexCorruptError
from facetrace.index import open_index
from facetrace.index.base import read_saved
from facetrace.index.faiss_ivf_pq import FaissIvfPqIndex
from tests.test_faiss_ivf import TRAIN_AT, recall_at_10
from tests.test_index_contract import DIM, faces, matches_exact_below_training, unit


def trained(n: int = 4000, **options: object) -> tuple[FaissIvfPqIndex, np.ndarray]:
    vectors = faces(n, people=n // 20, seed=21)
    index = FaissIvfPqIndex(DIM, train_at=TRAIN_AT, **options)  # type: ignore[arg-type]
    index.add(np.arange(n, dtype=np.int64), vectors)
    assert index.trained_size == n and index._pq is not None
    return index, vectors


def test_bad_options_are_config_errors() -> None:
    for bad in ({"m": 3}, {"m": 48}, {"refine": "i8"}, {"nprobe": 0}, {"k_factor": 0}):
        with pytest.raises(ConfigError):
            FaissIvfPqIndex(DIM, **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("refine", ["f32", "fp16"])
def test_recall_and_exact_scores_after_training(refine: str) -> None:
    index, vectors = trained(refine=refine)
    queries = faces(300, people=200, seed=21, draw=1)
    assert recall_at_10(index, np.arange(4000), vectors, queries) >= 0.97
    got, scores = index.search(queries, 10)
    exact = (unit(vectors)[got] * unit(queries)[:, None, :]).sum(axis=2)
    np.testing.assert_allclose(scores, exact, atol=2e-3 if refine == "fp16" else 1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_remove_and_upsert_are_immediate_after_training() -> None:
    index, vectors = trained()
    query = vectors[:3]
    assert index.search(query, 1)[0][:, 0].tolist() == [0, 1, 2]
    assert index.remove(np.array([0, 1, 99_999])) == 2
    assert len(index) == 3998
    ids, _ = index.search(query, 10)
    assert 0 not in ids[0] and 1 not in ids[1]
    # Upsert: id 2 now holds the vector of id 0, and nothing else does.
    index.add(np.array([2]), vectors[:1])
    assert index.search(vectors[:1], 1)[0][0, 0] == 2
    assert len(index) == 3998 and sorted(index.ids().tolist()) == list(range(2, 4000))


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_save_open_roundtrip_drops_removed_vectors(tmp_path: Path, mmap: bool) -> None:
    index, vectors = trained(refine="fp16")
    index.remove(np.arange(0, 4000, 2))
    index.save(tmp_path / "g.index")
    saved = read_saved(tmp_path / "g.index", backend="ivf-pq", dim=DIM)
    assert set(saved.files) == {"ids.npy", "vectors.npy", "faiss"}
    assert np.load(saved.files["vectors.npy"]).shape == (2000, DIM)
    assert not (np.load(saved.files["ids.npy"]) % 2 == 0).any()
    opened = open_index("ivf-pq", tmp_path / "g.index", DIM, mmap=mmap)
    queries = faces(50, people=200, seed=21, draw=1)
    np.testing.assert_array_equal(opened.search(queries, 10)[0], index.search(queries, 10)[0])
    # The mapped vectors are copied on the first add; removing works on them too.
    opened.add(np.array([0]), vectors[:1])
    assert opened.remove(np.array([1, 3])) == 2
    assert len(opened) == 1999 and opened.search(vectors[:1], 1)[0][0, 0] == 0


def test_regrowth_trains_again_and_keeps_every_id() -> None:
    index, vectors = trained(n=2500, regrow=1.5)
    more = faces(1500, people=100, seed=22)
    index.add(np.arange(2500, 4000, dtype=np.int64), more)
    assert index.trained_size == 4000 and len(index) == 4000
    assert sorted(index.ids().tolist()) == list(range(4000))
    both = np.concatenate([vectors, more])
    assert recall_at_10(index, np.arange(4000), both, both[::40]) >= 0.97


def test_a_damaged_faiss_file_raises_index_corrupt(tmp_path: Path) -> None:
    index, _ = trained()
    index.save(tmp_path / "g.index")
    data = read_saved(tmp_path / "g.index", backend="ivf-pq", dim=DIM).files["faiss"]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(IndexCorruptError):
        open_index("ivf-pq", tmp_path / "g.index", DIM)
    with pytest.raises(IndexCorruptError):
        open_index("ivf-pq", tmp_path / "g.index", DIM, verify=False)


def test_exact_below_the_threshold_matches_the_exact_backend() -> None:
    matches_exact_below_training("ivf-pq", seed=23)


def test_faces_added_after_removals_are_found() -> None:
    """FAISS's own removal from block-packed lists loses later adds; ours must not."""
    index, vectors = trained()
    index.remove(np.arange(0, 4000, 2))
    more = faces(200, people=100, seed=25)
    index.add(np.arange(5000, 5200, dtype=np.int64), more)
    assert index._pq.ntotal == len(index) == 2200
    assert index.search(more, 1)[0][:, 0].tolist() == list(range(5000, 5200))
    kept = np.arange(1, 4000, 2)[::10]
    assert index.search(vectors[kept], 1)[0][:, 0].tolist() == kept.tolist()

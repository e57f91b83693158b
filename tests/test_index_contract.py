"""The contract every vector index backend keeps, run once per name in ``BACKENDS``.

A new backend (Milvus) joins by adding its name to ``facetrace.index.BACKENDS``; every
test here then runs against it. Vectors are seeded, clustered like face embeddings:
identity means on the unit sphere plus same-person noise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import facetrace.index
from facetrace.errors import ConfigError, IndexCorruptError
from facetrace.index import BACKENDS, VectorIndex, create_index, index_files, open_index

DIM = 128
ANN = {
    "usearch",
    "ivf",
    "ivf-pq",
    "scann",
    "milvus",
}  # backends whose results may differ from the exact ones


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Milvus Lite database for the session: every index gets its own gallery key."""
    return str(tmp_path_factory.mktemp("milvus") / "contract.db")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name = str(request.param)
    if name == "milvus":
        monkeypatch.setenv("FACETRACE_MILVUS_URI", request.getfixturevalue("milvus_uri"))
    return name


def faces(
    n: int, *, people: int | None = None, seed: int = 0, draw: int = 0, noise: float = 0.05
) -> np.ndarray:
    """``n`` face-like vectors (not normalised): noisy copies of ``people`` identities.

    ``seed`` chooses the identities; ``draw`` chooses which photos of them are drawn.
    """
    people = people or max(1, n // 20)
    means = np.random.default_rng(seed).standard_normal((people, DIM))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, draw])
    who = rng.integers(0, people, n)
    scale = rng.uniform(0.5, 2.0, (n, 1))  # the index must normalise
    return ((means[who] + noise * rng.standard_normal((n, DIM))) * scale).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def filled(backend: str, n: int = 300, seed: int = 0) -> tuple[VectorIndex, np.ndarray]:
    vectors = faces(n, seed=seed)
    index = create_index(backend, DIM)
    index.add(np.arange(n, dtype=np.int64) * 3 + 1, vectors)
    return index, vectors


def matches_exact_below_training(backend: str, seed: int) -> VectorIndex:
    """A ``backend`` index of 500 faces (below its training threshold), which must give
    the exact backend's ids and scores; returned for further checks."""
    vectors = faces(500, seed=seed)
    ids = np.arange(500, dtype=np.int64) * 5
    index = create_index(backend, DIM)
    index.add(ids, vectors)
    reference = create_index("exact", DIM)
    reference.add(ids, vectors)
    queries = faces(40, seed=seed + 1)
    got, got_scores = index.search(queries, 10)
    want, want_scores = reference.search(queries, 10)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
    return index


def test_public_surface() -> None:
    assert facetrace.index.__all__ == [
        "BACKENDS",
        "ExactIndex",
        "UsearchIndex",
        "VectorIndex",
        "create_index",
        "index_files",
        "open_index",
    ]
    assert BACKENDS[0] == "usearch"


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="milvus"):
        create_index("annoy", DIM)
    with pytest.raises(ConfigError):
        open_index("annoy", tmp_path / "x.index", DIM)


def test_is_a_vector_index(backend: str) -> None:
    index = create_index(backend, DIM)
    assert isinstance(index, VectorIndex)
    assert index.dim == DIM and index.meta == {}


def test_empty_search_pads(backend: str) -> None:
    ids, scores = create_index(backend, DIM).search(faces(3), 4)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert ids.shape == scores.shape == (3, 4)
    assert (ids == -1).all() and np.isneginf(scores).all()


def test_exact_neighbour_is_top1(backend: str) -> None:
    index, vectors = filled(backend)
    ids, scores = index.search(vectors[::7], 5)
    assert (ids[:, 0] == np.arange(0, 300, 7) * 3 + 1).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_single_query_is_one_row(backend: str) -> None:
    index, vectors = filled(backend)
    ids, scores = index.search(vectors[10], 3)
    assert ids.shape == scores.shape == (1, 3)
    assert ids[0, 0] == 31


def test_scores_are_sorted_cosine_similarities(backend: str) -> None:
    index, vectors = filled(backend)
    queries = faces(20, seed=1)
    ids, scores = index.search(queries, 10)
    assert (np.diff(scores, axis=1) <= 0).all()
    rows = (ids - 1) // 3
    expected = np.einsum("qd,qkd->qk", unit(queries), unit(vectors)[rows])
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_k_larger_than_count(backend: str) -> None:
    index, vectors = filled(backend, n=5)
    ids, scores = index.search(vectors[:2], 8)
    assert ids.shape == (2, 8)
    assert sorted(ids[0, :5].tolist()) == [1, 4, 7, 10, 13]
    assert (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert np.isfinite(scores[:, :5]).all()


def test_add_is_an_upsert(backend: str) -> None:
    index, vectors = filled(backend)
    replacement = faces(1, seed=9)
    index.add(np.array([31]), replacement)
    assert len(index) == 300
    assert sorted(index.ids().tolist()) == sorted((np.arange(300) * 3 + 1).tolist())
    ids, scores = index.search(replacement, 1)
    assert ids[0, 0] == 31 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    ids, _ = index.search(vectors[10], 1)
    assert ids[0, 0] != 31  # the old vector is gone


def test_repeated_id_in_one_add_keeps_the_last(backend: str) -> None:
    index = create_index(backend, DIM)
    v = faces(3, seed=2)
    index.add(np.array([7, 8, 7]), v)
    assert len(index) == 2
    ids, scores = index.search(v[2], 1)
    assert ids[0, 0] == 7 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_remove_takes_effect_immediately(backend: str) -> None:
    index, vectors = filled(backend, n=600)
    gone = np.arange(0, 600, 2) * 3 + 1
    assert index.remove(gone) == 300
    assert len(index) == 300
    assert not np.isin(index.ids(), gone).any()
    ids, _ = index.search(vectors, 10)
    assert not np.isin(ids, gone).any()
    assert (ids[1::2, 0] == np.arange(1, 600, 2) * 3 + 1).all()


def test_remove_counts_only_present_ids(backend: str) -> None:
    index, _ = filled(backend, n=10)
    assert index.remove(np.array([999, 1000])) == 0
    assert index.remove(np.array([1, 1, 4, 999])) == 2
    assert index.remove(np.array([1])) == 0
    assert index.remove(np.array([], dtype=np.int64)) == 0
    assert len(index) == 8


def test_readd_after_remove(backend: str) -> None:
    index, vectors = filled(backend, n=10)
    index.remove(np.array([4]))
    index.add(np.array([4]), vectors[1:2])
    assert len(index) == 10
    assert index.search(vectors[1], 1)[0][0, 0] == 4


def test_len_and_ids(backend: str) -> None:
    index = create_index(backend, DIM)
    assert len(index) == 0 and index.ids().dtype == np.int64 and index.ids().size == 0
    index.add(np.array([], dtype=np.int64), np.empty((0, DIM), np.float32))
    assert len(index) == 0
    index.add(np.array([5, 2**40]), faces(2))
    assert len(index) == 2
    assert sorted(index.ids().tolist()) == [5, 2**40]


def test_bad_input_is_a_value_error(backend: str) -> None:
    index, _ = filled(backend, n=10)
    with pytest.raises(ValueError):
        index.add(np.array([1]), np.ones((1, DIM + 1), np.float32))
    with pytest.raises(ValueError):
        index.add(np.array([1]), np.zeros((1, DIM), np.float32))
    with pytest.raises(ValueError):
        index.add(np.array([1, 2]), faces(1))
    with pytest.raises(ValueError):
        index.add(np.array([-1]), faces(1))
    with pytest.raises(ValueError):
        index.add(np.array([1]), np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(ValueError):
        index.search(np.ones(DIM - 1, np.float32), 3)
    with pytest.raises(ValueError):
        index.search(faces(1), 0)
    with pytest.raises(ValueError):
        index.search(np.zeros(DIM, np.float32), 1)
    assert len(index) == 10


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_save_open_roundtrip(backend: str, tmp_path: Path, mmap: bool) -> None:
    index, vectors = filled(backend, n=500)
    index.remove(np.array([1, 4]))
    queries = faces(30, seed=3)
    before = index.search(queries, 10)
    path = tmp_path / "faces.index"
    index.save(path)
    again = open_index(backend, path, DIM, mmap=mmap)
    assert len(again) == 498
    assert sorted(again.ids().tolist()) == sorted(index.ids().tolist())
    after = again.search(queries, 10)
    if backend in ANN:
        assert (after[0][:, 0] == before[0][:, 0]).all()
    else:
        np.testing.assert_array_equal(after[0], before[0])
        np.testing.assert_array_equal(after[1], before[1])
    # A mapped index copies itself before the first change.
    again.add(np.array([1]), vectors[0:1])
    assert again.remove(np.array([7])) == 1
    assert len(again) == 498
    again.save(path)
    third = open_index(backend, path, DIM, mmap=mmap)
    assert len(third) == 498 and third.search(vectors[0], 1)[0][0, 0] == 1
    assert 7 not in third.ids()


def test_meta_roundtrip(backend: str, tmp_path: Path) -> None:
    index, _ = filled(backend, n=10)
    index.meta.update({"model": "dlib_resnet_v1", "generation": 3, "note": ["é", None]})
    index.save(tmp_path / "i")
    assert open_index(backend, tmp_path / "i", DIM).meta == index.meta
    index.meta["bad"] = object()
    with pytest.raises(ValueError, match="JSON"):
        index.save(tmp_path / "j")
    assert index_files(tmp_path / "j") == []


def test_open_missing_path_is_empty(backend: str, tmp_path: Path) -> None:
    index = open_index(backend, tmp_path / "none" / "faces.index", DIM)
    assert len(index) == 0 and index.dim == DIM and index.meta == {}


def test_saves_replace_old_files(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "faces.index"
    index, _ = filled(backend, n=20)
    index.save(path)
    first = index_files(path)
    assert first[0] == path and len(first) >= 2
    (tmp_path / "unrelated.txt").write_text("keep me")
    index.remove(np.array([1]))
    index.save(path)
    second = index_files(path)
    assert len(second) == len(first) and not set(first[1:]) & set(second[1:])
    for p in second:
        p.unlink()
    assert index_files(path) == [] and (tmp_path / "unrelated.txt").exists()


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    rng = np.random.default_rng(4)
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(rng.bytes(len(data)))
    elif how == "one-byte":
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :])
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "garbage", "one-byte", "empty"])
def test_damaged_files_raise_index_corrupt(backend: str, tmp_path: Path, how: str) -> None:
    path = tmp_path / "faces.index"
    index, _ = filled(backend, n=200)
    index.save(path)
    pristine = {p: p.read_bytes() for p in index_files(path)}
    for victim in pristine:
        _damage(victim, how)
        with pytest.raises(IndexCorruptError) as caught:
            open_index(backend, path, DIM)
        message = str(caught.value)
        assert victim.name in message and "facetrace reindex" in message
        assert "\n" not in message
        victim.write_bytes(pristine[victim])
    assert len(open_index(backend, path, DIM)) == 200


def test_missing_data_file_raises_index_corrupt(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "faces.index"
    filled(backend, n=20)[0].save(path)
    index_files(path)[-1].unlink()
    with pytest.raises(IndexCorruptError, match="missing"):
        open_index(backend, path, DIM)


def test_foreign_file_raises_index_corrupt(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "faces.index"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(IndexCorruptError, match="faces.index"):
        open_index(backend, path, DIM)


def test_wrong_dim_or_backend_raises_index_corrupt(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "faces.index"
    filled(backend, n=20)[0].save(path)
    with pytest.raises(IndexCorruptError, match="64-d"):
        open_index(backend, path, 64)
    for other in BACKENDS:
        if other != backend:
            with pytest.raises(IndexCorruptError, match=backend):
                open_index(other, path, DIM)


_SAVE_FOREVER = """
import sys
from pathlib import Path
import numpy as np
from facetrace.index import create_index
backend, path = sys.argv[1], Path(sys.argv[2])
rng = np.random.default_rng(0)
index = create_index(backend, 128)
step = 0
while True:
    index.add(np.arange(step * 500, step * 500 + 500), rng.standard_normal((500, 128)))
    index.meta["steps"] = step + 1
    index.save(path)
    step += 1
"""


def test_kill_during_save_keeps_a_whole_index(backend: str, tmp_path: Path) -> None:
    if backend == "milvus":
        pytest.skip(
            "Milvus holds the vectors, not the saved files: rows added after the last save "
            "stay, and Milvus Lite serves one process (test_milvus_index kills a saver)"
        )
    path = tmp_path / "faces.index"
    proc = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, backend, str(path)])
    try:
        deadline = time.monotonic() + 60
        while len(index_files(path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    index = open_index(backend, path, DIM)
    assert len(index) == 500 * index.meta["steps"]
    index.save(path)  # and the leftovers of the killed save are cleaned up
    index.save(tmp_path / "clean.index")
    assert len(index_files(path)) == len(index_files(tmp_path / "clean.index"))


def test_ann_recall_at_10(backend: str) -> None:
    vectors = faces(5000, people=250, seed=5)
    ids = np.arange(5000, dtype=np.int64)
    index = create_index(backend, DIM)
    index.add(ids, vectors)
    reference = create_index("exact", DIM)
    reference.add(ids, vectors)
    queries = faces(300, people=250, seed=5, draw=1)
    got, _ = index.search(queries, 10)
    want, _ = reference.search(queries, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
    assert recall >= 0.95


def test_mapped_index_saves_over_its_own_files(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "faces.index"
    index, vectors = filled(backend, n=50)
    index.save(path)
    mapped = open_index(backend, path, DIM, mmap=True)
    mapped.meta["generation"] = 2
    mapped.save(path)  # deletes the files it maps; the mapping stays valid
    assert mapped.search(vectors[3], 1)[0][0, 0] == 10
    again = open_index(backend, path, DIM)
    assert len(again) == 50 and again.meta == {"generation": 2}


def test_every_vector_finds_itself(backend: str) -> None:
    # usearch's concurrent inserts once left some vectors unreachable; see usearch_index.
    vectors = faces(3000, people=150, seed=7)
    index = create_index(backend, DIM)
    index.add(np.arange(3000), vectors)
    ids, _ = index.search(vectors, 1)
    assert (ids[:, 0] == np.arange(3000)).all()

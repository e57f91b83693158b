"""The FAISS IVF backend past its training threshold (the contract tests stay below it).

``train_at`` is lowered so that a few thousand vectors train the inverted lists; the
vectors come from the contract tests' face-like generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetrace.errors import ConfigError, IndexCorruptError
from facetrace.index import create_index, index_files, open_index
from facetrace.index.base import read_saved
from facetrace.index.faiss_ivf import CODECS, FaissIvfIndex, auto_nlist
from tests.test_index_contract import DIM, faces

TRAIN_AT = 2000


def trained(
    n: int = 4000, codec: str = "flat", **options: object
) -> tuple[FaissIvfIndex, np.ndarray]:
    vectors = faces(n, people=n // 20, seed=11)
    index = FaissIvfIndex(DIM, codec=codec, train_at=TRAIN_AT, **options)  # type: ignore[arg-type]
    index.add(np.arange(n, dtype=np.int64), vectors)
    assert index.trained_size == n
    return index, vectors


def recall_at_10(
    index: FaissIvfIndex, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray
) -> float:
    reference = create_index("exact", DIM)
    reference.add(ids, vectors)
    got, _ = index.search(queries, 10)
    want, _ = reference.search(queries, 10)
    return float(np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)]))


def test_auto_nlist() -> None:
    assert auto_nlist(20_000) == 512
    assert auto_nlist(1_000_000) == 4096
    assert auto_nlist(10_000_000) == 4_096
    assert auto_nlist(10**9) == 4_096
    assert auto_nlist(2000) == 32  # at least 39 training points per list


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="codec"):
        FaissIvfIndex(DIM, codec="pq")
    with pytest.raises(ConfigError):
        FaissIvfIndex(DIM, nprobe=0)
    with pytest.raises(ConfigError):
        FaissIvfIndex(DIM, regrow=1.0)


def test_exact_below_the_threshold() -> None:
    vectors = faces(TRAIN_AT - 1, seed=12)
    ids = np.arange(vectors.shape[0], dtype=np.int64) * 7
    index = FaissIvfIndex(DIM, codec="sq8", train_at=TRAIN_AT, nprobe=1)
    index.add(ids, vectors)
    assert index.trained_size == 0
    reference = create_index("exact", DIM)
    reference.add(ids, vectors)
    queries = faces(50, seed=13)
    got, got_scores = index.search(queries, 10)
    want, want_scores = reference.search(queries, 10)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("codec", CODECS)
def test_recall_after_training(codec: str) -> None:
    index, vectors = trained(codec=codec)
    assert index._params()["nlist"] == auto_nlist(4000)
    queries = faces(300, people=200, seed=11, draw=1)
    assert recall_at_10(index, np.arange(4000), vectors, queries) >= 0.97


def test_nprobe_is_settable() -> None:
    index, vectors = trained()
    index.nprobe = 10**6  # more than nlist: every list, exact results
    queries = faces(40, people=200, seed=11, draw=2)
    assert recall_at_10(index, np.arange(4000), vectors, queries) == 1.0


def test_remove_is_immediate_after_training() -> None:
    index, vectors = trained()
    gone = np.arange(0, 4000, 2)
    assert index.remove(gone) == 2000
    assert index.remove(gone[:5]) == 0
    assert len(index) == 2000 and not np.isin(index.ids(), gone).any()
    ids, _ = index.search(vectors, 10)
    assert not np.isin(ids, gone).any()
    assert (ids[1::2, 0] == np.arange(1, 4000, 2)).all()


def test_upsert_after_training() -> None:
    index, vectors = trained()
    replacement = faces(1, seed=99)
    index.add(np.array([17]), replacement)
    assert len(index) == 4000
    ids, scores = index.search(replacement, 1)
    assert ids[0, 0] == 17 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert index.search(vectors[17], 1)[0][0, 0] != 17


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
@pytest.mark.parametrize("codec", ["flat", "sq8"])
def test_trained_save_open_roundtrip(tmp_path: Path, mmap: bool, codec: str) -> None:
    index, vectors = trained(codec=codec, nprobe=20)
    path = tmp_path / "faces.index"
    index.save(path)
    params = read_saved(path, backend="ivf", dim=DIM).params
    assert params["codec"] == codec and params["nprobe"] == 20
    assert params["trained_size"] == 4000 and params["nlist"] == auto_nlist(4000)
    again = open_index("ivf", path, DIM, mmap=mmap)
    assert isinstance(again, FaissIvfIndex)
    assert again.nprobe == 20 and again.trained_size == 4000 and again.codec == codec
    queries = faces(30, people=200, seed=11, draw=3)
    np.testing.assert_array_equal(again.search(queries, 10)[0], index.search(queries, 10)[0])
    # The first change copies a mapped index into memory.
    assert again.remove(np.array([3, 4])) == 2
    again.add(np.array([3]), vectors[5:6])
    assert len(again) == 3999 and 4 not in again.ids()
    assert again.search(vectors[5], 2)[0][0].tolist() in ([3, 5], [5, 3])
    again.save(path)
    third = open_index("ivf", path, DIM, mmap=mmap)
    assert len(third) == 3999 and sorted(third.ids().tolist()) == sorted(again.ids().tolist())


def test_mapped_index_changes_after_its_file_is_gone(tmp_path: Path) -> None:
    index, vectors = trained()
    path = tmp_path / "faces.index"
    index.save(path)
    mapped = open_index("ivf", path, DIM, mmap=True)
    mapped.save(path)  # deletes the file it maps
    for p in index_files(path):
        p.unlink()
    mapped.add(np.array([10**9]), vectors[:1])
    assert len(mapped) == 4001 and mapped.search(vectors[0], 1)[1][0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("codec", CODECS)
def test_retrain_on_growth_keeps_every_id(codec: str) -> None:
    vectors = faces(6000, people=300, seed=14)
    index = FaissIvfIndex(DIM, codec=codec, train_at=1000, regrow=2.0)
    sizes = []
    for start in range(0, 6000, 500):
        index.add(np.arange(start, start + 500), vectors[start : start + 500])
        sizes.append(index.trained_size)
    assert sizes[0] == 0 and sizes[1] == 1000
    assert sorted(set(sizes)) == [0, 1000, 2500, 5500]
    assert index._params()["nlist"] == auto_nlist(5500)
    assert sorted(index.ids().tolist()) == list(range(6000))
    index.nprobe = 10**6
    ids, scores = index.search(vectors, 1)
    assert (ids[:, 0] == np.arange(6000)).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=5e-2 if codec == "sq8" else 1e-3)


def test_fixed_nlist_trains_once_it_has_enough_points() -> None:
    index = FaissIvfIndex(DIM, train_at=100, regrow=2.0, nlist=16)
    vectors = faces(5000, seed=15)
    index.add(np.arange(600), vectors[:600])
    assert index.trained_size == 0  # 16 lists want 16 * 39 = 624 points
    index.add(np.arange(600, 1000), vectors[600:1000])
    index.add(np.arange(1000, 5000), vectors[1000:])
    assert index.trained_size == 1000 and index._params()["nlist"] == 16  # never retrains


def lists(index: object) -> int:
    """How many k-means lists (ScaNN: leaves) a trained index has."""
    if hasattr(index, "leaves"):
        return int(index.leaves)
    return int(index._params()["nlist"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["ivf", "ivf-pq", "scann"])
def test_an_index_told_its_size_trains_once_for_it(backend: str) -> None:
    """A rebuild knows how many faces it adds: the lists are trained once, for all of
    them, not at ``train_at`` for a few (and again as the index grows)."""
    vectors = faces(8000, people=400, seed=16)
    sized = create_index(backend, DIM, expect=8000, train_at=1000)
    grown = create_index(backend, DIM, train_at=1000)
    seen = set()
    for start in range(0, 8000, 500):
        for index in (sized, grown):
            index.add(np.arange(start, start + 500), vectors[start : start + 500])
        seen.add(sized.trained_size)  # type: ignore[attr-defined]
    assert seen == {0, 8000} and grown.trained_size == 1000  # type: ignore[attr-defined]
    assert lists(sized) == sized._auto_nlist(8000) == 128  # type: ignore[attr-defined]
    assert lists(grown) == 16
    finds = sized.search(vectors[::40], 1)[0][:, 0]
    assert (finds == np.arange(0, 8000, 40)).mean() >= 0.95
    assert create_index("exact", DIM, expect=8000).search(vectors[:1], 1)[0].shape == (1, 1)


def test_training_is_reproducible() -> None:
    first, _ = trained()
    second, _ = trained()
    queries = faces(50, people=200, seed=11, draw=4)
    np.testing.assert_array_equal(first.search(queries, 10)[0], second.search(queries, 10)[0])


@pytest.mark.parametrize(
    ("how", "verify"),
    [("truncated", True), ("one-byte", True), ("garbage", True), ("garbage", False)],
)
def test_damaged_trained_file_raises_index_corrupt(tmp_path: Path, how: str, verify: bool) -> None:
    path = tmp_path / "faces.index"
    trained(n=2500)[0].save(path)
    data = index_files(path)[1]
    raw = data.read_bytes()
    mid = len(raw) // 2
    if how == "truncated":
        data.write_bytes(raw[:mid])
    elif how == "one-byte":
        data.write_bytes(raw[:mid] + bytes([raw[mid] ^ 0xFF]) + raw[mid + 1 :])
    else:  # without the SHA-256 check, FAISS itself must refuse it
        data.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    with pytest.raises(IndexCorruptError, match=data.name):
        open_index("ivf", path, DIM, verify=verify)


def _maps(path: Path) -> bool:
    return path.name in Path("/proc/self/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_first_change_releases_the_mapping(tmp_path: Path) -> None:
    index, vectors = trained()
    path = tmp_path / "faces.index"
    index.save(path)
    data = index_files(path)[1]
    mapped = open_index("ivf", path, DIM, mmap=True)
    assert _maps(data)
    assert mapped.remove(np.array([0])) == 1
    assert not _maps(data)
    assert len(mapped) == 3999 and mapped.search(vectors[1], 1)[0][0, 0] == 1
    read = open_index("ivf", path, DIM, mmap=False)
    assert not _maps(data) and len(read) == 4000


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_emptied_trained_index_roundtrip(tmp_path: Path, mmap: bool) -> None:
    index, vectors = trained(n=2500)
    index.remove(np.arange(2500))
    path = tmp_path / "faces.index"
    index.save(path)
    again = open_index("ivf", path, DIM, mmap=mmap)
    assert len(again) == 0 and again.ids().size == 0
    assert (again.search(vectors[:2], 3)[0] == -1).all()
    again.add(np.array([4]), vectors[4:5])
    assert again.search(vectors[4], 1)[0][0, 0] == 4

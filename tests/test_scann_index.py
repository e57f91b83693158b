"""The ``scann`` backend past its training threshold (the contract tests stay below it).

``train_at`` is lowered so that a few thousand of the contract tests' face-like vectors
train ScaNN's leaves and codes. Scores are re-ranked exactly, so they must equal the
exact backend's for every face returned. A removed face stays in ScaNN, dead, until it
is left out of ScaNN's files, so removals are checked against the ids every face is
found under, before and after that.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from facetrace.errors import ConfigError, IndexCorruptError
from facetrace.index import open_index, scann_index
from facetrace.index.base import SortedIds, read_saved
from facetrace.index.scann_index import Positions, ScannIndex, auto_nlist
from tests.test_faiss_ivf import TRAIN_AT, recall_at_10
from tests.test_index_contract import DIM, faces, matches_exact_below_training, unit


def trained(n: int = 4000, **options: object) -> tuple[ScannIndex, np.ndarray]:
    """An index past training; it searches 16 of its 64 leaves unless told otherwise."""
    vectors = faces(n, people=n // 20, seed=31)
    options = {"nprobe": 16, **options}
    index = ScannIndex(DIM, train_at=TRAIN_AT, **options)  # type: ignore[arg-type]
    index.add(np.arange(n, dtype=np.int64), vectors)
    assert index.trained_size == n and index.exact is None and index.leaves > 1
    return index, vectors


def finds_itself(index: ScannIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
    got = index.search(vectors, 1)[0][:, 0]
    np.testing.assert_array_equal(got, ids)


def test_bad_options_are_config_errors() -> None:
    for bad in (
        {"nprobe": 0},
        {"nlist": 0},
        {"k_factor": 0},
        {"regrow": 1.0},
        {"spill": 2},
        {"rerank": 0},
        {"rerank": True},
    ):
        with pytest.raises(ConfigError):
            ScannIndex(DIM, **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="even"):
        ScannIndex(127)


def test_default_breadth_follows_the_leaves(tmp_path: Path) -> None:
    assert trained(nprobe=None, spill=0)[0].nprobe == 23  # 64 ** 0.75 = 22.6
    assert ScannIndex(DIM, spill=0)._breadth(16_384) == 1449
    index, _ = trained(nprobe=None)
    assert index.leaves == 64 and index.nprobe == 22  # 256 * (64 / 4096) ** 0.585
    assert index._breadth(4096) == 256 and index._breadth(16_384) == 576
    index.save(tmp_path / "g.index")
    opened = open_index("scann", tmp_path / "g.index", DIM)
    assert isinstance(opened, ScannIndex) and opened.nprobe == 22
    assert opened.nprobe_option is None


def test_auto_nlist_grows_with_the_gallery_and_keeps_leaves_full() -> None:
    assert auto_nlist(20_000) * 50 <= 20_000
    assert auto_nlist(1_000_000) == 4096 and auto_nlist(10_000_000) == 16_384
    assert auto_nlist(10**9) == 16_384


def test_recall_and_exact_scores_after_training() -> None:
    index, vectors = trained()
    queries = faces(300, people=200, seed=31, draw=1)
    assert recall_at_10(index, np.arange(4000), vectors, queries) >= 0.97
    got, scores = index.search(queries, 10)
    exact = (unit(vectors)[got] * unit(queries)[:, None, :]).sum(axis=2)
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    # One query at a time (ScaNN's one-query call, which rounds its lookup tables on its
    # own) finds the same best face and nearly the same ten, with exact scores too.
    singles = [index.search(q, 10) for q in queries]
    one = np.concatenate([ids for ids, _ in singles])
    one_scores = np.concatenate([scores for _, scores in singles])
    assert (one[:, 0] == got[:, 0]).mean() >= 0.99
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(one, got, strict=True)]) >= 0.97
    exact_one = (unit(vectors)[one] * unit(queries)[:, None, :]).sum(axis=2)
    np.testing.assert_allclose(one_scores, exact_one, atol=1e-5)


def test_remove_and_upsert_are_immediate_after_training() -> None:
    index, vectors = trained()
    assert index.search(vectors[:3], 1)[0][:, 0].tolist() == [0, 1, 2]
    assert index.remove(np.array([0, 1, 99_999])) == 2
    assert len(index) == 3998
    ids, _ = index.search(vectors[:3], 10)
    assert 0 not in ids[0] and 1 not in ids[1]
    # Upsert: id 2 now holds the vector of id 0, and nothing else does.
    index.add(np.array([2]), vectors[:1])
    assert index.search(vectors[:1], 1)[0][0, 0] == 2
    assert len(index) == 3998 and sorted(index.ids().tolist()) == list(range(2, 4000))
    # Every other face still has its id.
    finds_itself(index, np.arange(3, 4000), vectors[3:])


def test_removing_many_scattered_faces_keeps_every_other_id() -> None:
    index, vectors = trained()
    gone = np.r_[np.arange(0, 4000, 3), [3999, 3998, 3997]]
    assert index.remove(gone) == np.unique(gone).size
    kept = np.setdiff1d(np.arange(4000), gone)
    assert sorted(index.ids().tolist()) == kept.tolist()
    finds_itself(index, kept, vectors[kept])
    assert not np.isin(index.search(vectors, 10)[0], gone).any()
    more = faces(300, people=50, seed=32)
    index.add(np.arange(9000, 9300), more)  # appended after the moves
    finds_itself(index, np.arange(9000, 9300), more)
    finds_itself(index, kept, vectors[kept])


def test_positions_mark_removed_faces_dead() -> None:
    positions = Positions(np.array([10, 11, 12, 13, 14, 15], np.int64))
    positions.kill(np.array([1, 5, 2]))
    assert positions.live().tolist() == [True, False, False, True, True, False]
    assert positions.live_count == 3 and positions.dead_count == 3
    assert positions.lookup(np.array([13, 14, 10, 15, 11, 99])).tolist() == [3, 4, 0, -1, -1, -1]
    positions.append(np.array([11, 20], np.int64))  # an id comes back at a new position
    assert positions.lookup(np.array([11, 20, 12])).tolist() == [6, 7, -1]
    # ids after all others extend the lookup in place; a face removed later is not found
    positions.append(np.array([21, 22], np.int64))
    assert not positions._sorted.stale
    positions.kill(np.array([8]))
    assert positions.lookup(np.array([21, 22, 20])).tolist() == [-1, 9, 7]


def test_sorted_ids_grow_in_place_and_go_stale_out_of_order() -> None:
    lookup = SortedIds()
    lookup.extend(np.array([1, 2]), np.array([0, 1]))
    assert lookup.stale  # never built: the owner builds it on its first lookup
    lookup.reset(np.array([3, 7]), np.array([1, 0]))
    for start in range(8, 998, 10):  # 99 batches, each after the rest
        lookup.extend(np.arange(start, start + 10), np.arange(start, start + 10))
    buffer = lookup._ids
    lookup.extend(np.array([1000]), np.array([1000]))
    assert not lookup.stale and lookup._ids is buffer  # written in place, not copied
    ids, rows = lookup.arrays()
    assert ids.tolist() == [3, 7, *range(8, 998), 1000] and rows[:2].tolist() == [1, 0]
    lookup.extend(np.array([5]), np.array([1001]))  # not after the rest
    assert lookup.stale


def test_dead_faces_never_crowd_out_the_living(tmp_path: Path) -> None:
    # 700 faces ever further from a query (cosine 0.99, 0.9892, ...); its 600 nearest
    # removed. With k_factor 4, ScaNN's first answer holds only dead faces, and the
    # index must ask again, not return fewer or worse faces.
    rng = np.random.default_rng(5)
    query = unit(rng.standard_normal((1, DIM))).astype(np.float32)  # not in the gallery
    away = rng.standard_normal((700, DIM))
    away = unit(away - (away @ query[0])[:, None] * query)
    cos = 0.99 - 0.0008 * np.arange(700)[:, None]
    graded = (cos * query + np.sqrt(1 - cos**2) * away).astype(np.float32)
    vectors = faces(4000, people=200, seed=31)
    index = ScannIndex(DIM, train_at=TRAIN_AT, k_factor=4, nprobe=64)
    index.add(np.r_[np.arange(4000), np.arange(10_000, 10_700)], np.r_[vectors, graded])
    assert index.trained_size == 4700  # the leaves and codes learn the graded faces too
    gone = np.arange(10_000, 10_600)
    assert index.remove(gone) == 600 and index.positions.dead_count == 600  # kept in ScaNN
    for k in (1, 10, 50):
        ids, _ = index.search(query, k)
        # all of them among the 100 left nearest (cosine 0.51 to 0.43, where the other
        # faces reach about 0.3), the best among the first ten (4-bit codes, 4 per k)
        assert set(ids[0]) <= set(range(10_600, 10_700)) and ids[0][0] < 10_610
        assert k == 1 or len(set(ids[0]) & set(range(10_600, 10_600 + k))) >= 0.6 * k
    kept = np.r_[np.arange(4000), np.arange(10_600, 10_700)]
    both = np.concatenate([vectors, graded[600:]])
    assert recall_at_10(index, kept, both, vectors[::40]) >= 0.97
    # The files hold the living only; opened, the same answers.
    index.save(tmp_path / "g.index")
    assert read_saved(tmp_path / "g.index", backend="scann", dim=DIM).count == kept.size
    opened = open_index("scann", tmp_path / "g.index", DIM)
    assert isinstance(opened, ScannIndex) and opened.positions.n == kept.size
    np.testing.assert_array_equal(
        opened.search(vectors[::40], 10)[0], index.search(vectors[::40], 10)[0]
    )
    assert set(opened.search(query, 10)[0][0]) <= set(range(10_600, 10_700))
    finds_itself(opened, kept, both)


def test_many_removals_leave_the_dead_out_of_scann() -> None:
    index, vectors = trained()
    gone = np.arange(0, 4000, 4)[:801]  # past a quarter of the 3,199 left
    index.remove(gone[:800])
    assert index.positions.dead_count == 800 and index.positions.n == 4000
    index.remove(gone[800:])
    assert index.positions.dead_count == 0 and index.positions.n == 3199 == len(index)
    kept = np.setdiff1d(np.arange(4000), gone)
    finds_itself(index, kept, vectors[kept])
    index.add(gone[:10], vectors[gone[:10]])  # back, appended after the compaction
    finds_itself(index, gone[:10], vectors[gone[:10]])
    assert len(index) == 3209


def test_a_failed_compaction_keeps_the_index_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    index, vectors = trained()

    def disk_full(folder: Path, keep: np.ndarray, into: Path | None = None) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scann_index, "drop_rows", disk_full)
    with pytest.raises(OSError, match="space"):
        index.remove(np.arange(0, 4000, 2))  # past a quarter: compaction, which fails
    assert len(index) == 2000 and index.positions.dead_count == 2000  # still removed
    assert not np.isin(index.search(vectors[::7], 10)[0], np.arange(0, 4000, 2)).any()
    finds_itself(index, np.arange(1, 4000, 2), vectors[1::2])
    monkeypatch.undo()
    index.remove(np.array([1]))  # compacts now
    assert index.positions.n == len(index) == 1999
    finds_itself(index, np.arange(3, 4000, 2), vectors[3::2])
    # ScaNN files whose rows do not match the faces are refused before any is written
    folder = tmp_path / "files"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((4, 2), np.float32))
    np.save(folder / "b.npy", np.zeros((5,), np.int32))
    with pytest.raises(RuntimeError, match=r"b\.npy"):
        scann_index.drop_rows(folder, np.array([True, False, True, True]))
    assert np.load(folder / "a.npy").shape == (4, 2)


def test_without_spill_search_and_removal_work_the_same(tmp_path: Path) -> None:
    index, vectors = trained(spill=0)
    assert "database_spilling" not in index._native.config()
    queries = faces(100, people=200, seed=31, draw=1)
    assert recall_at_10(index, np.arange(4000), vectors, queries) >= 0.97
    index.remove(np.arange(0, 4000, 2))
    finds_itself(index, np.arange(1, 4000, 2), vectors[1::2])
    index.save(tmp_path / "g.index")
    opened = open_index("scann", tmp_path / "g.index", DIM)
    assert isinstance(opened, ScannIndex) and opened.spill == 0
    assert trained()[0]._native.config().count("database_spilling") == 1  # the default


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_save_open_roundtrip(tmp_path: Path, mmap: bool) -> None:
    index, vectors = trained()
    index.remove(np.arange(0, 4000, 2))
    index.save(tmp_path / "g.index")
    saved = read_saved(tmp_path / "g.index", backend="scann", dim=DIM)
    assert "ids.npy" in saved.files and "scann.scann_assets.pbtxt" in saved.files
    assert not list(tmp_path.glob(".g.index.scann-save-*"))  # ScaNN's scratch is gone
    opened = open_index("scann", tmp_path / "g.index", DIM, mmap=mmap)
    assert isinstance(opened, ScannIndex) and opened.leaves == index.leaves
    queries = faces(50, people=200, seed=31, draw=1)
    np.testing.assert_array_equal(opened.search(queries, 10)[0], index.search(queries, 10)[0])
    opened.add(np.array([0]), vectors[:1])
    assert opened.remove(np.array([1, 3])) == 2
    assert len(opened) == 1999 and opened.search(vectors[:1], 1)[0][0, 0] == 0
    finds_itself(opened, np.arange(5, 4000, 2), vectors[5::2])


def test_regrowth_trains_again_with_more_leaves_and_keeps_every_id() -> None:
    index, vectors = trained(n=2500, regrow=1.5)
    before = index.leaves
    index.remove(np.arange(0, 100))  # dead faces are left out before training again
    more = faces(5000, people=250, seed=33)
    index.add(np.arange(2500, 7500, dtype=np.int64), more)
    assert index.trained_size > 2500 * 1.5 and index.leaves > before
    assert index.positions.dead_count == 0 and index.positions.n == 7400
    assert sorted(index.ids().tolist()) == list(range(100, 7500))
    both = np.concatenate([vectors, more])
    finds_itself(index, np.arange(100, 7500)[::7], both[100::7])
    assert recall_at_10(index, np.arange(100, 7500), both[100:], both[::50]) >= 0.97


@pytest.mark.parametrize("verify", [True, False])
def test_a_damaged_scann_file_raises_index_corrupt(tmp_path: Path, verify: bool) -> None:
    index, _ = trained()
    index.save(tmp_path / "g.index")
    files = read_saved(tmp_path / "g.index", backend="scann", dim=DIM).files
    if verify:  # any byte of any file: the SHA-256 check catches it before ScaNN reads
        data = files["scann.dataset.npy"]
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:  # without it, ScaNN's own reader must refuse a damaged text file cleanly
        files["scann.scann_assets.pbtxt"].write_text("assets { nonsense", encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="reindex"):
        open_index("scann", tmp_path / "g.index", DIM, verify=verify)


def test_exact_below_the_threshold_matches_the_exact_backend(tmp_path: Path) -> None:
    index = matches_exact_below_training("scann", seed=34)
    index.save(tmp_path / "small.index")
    saved = read_saved(tmp_path / "small.index", backend="scann", dim=DIM)
    assert set(saved.files) == {"ids.npy", "vectors.npy"}


def test_scanns_log_goes_to_the_logger_not_the_terminal(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="facetrace.index.scann_index"):
        trained(n=2500)
    assert "partition" not in capfd.readouterr().err.lower()
    assert any(r.getMessage().startswith("scann: ") for r in caplog.records)


def test_at_least_rerank_faces_are_re_ranked_and_the_option_is_kept(tmp_path: Path) -> None:
    index, vectors = trained(rerank=700)
    assert index._pool(10) == 700 and index._pool(50) == 2000  # k * k_factor past it
    assert "approx_num_neighbors: 700" in index._native.config()
    finds_itself(index, np.arange(4000), vectors)
    index.save(tmp_path / "g.index")
    opened = open_index("scann", tmp_path / "g.index", DIM)
    assert isinstance(opened, ScannIndex) and opened.rerank == 700
    assert ScannIndex(DIM).rerank == scann_index.DEFAULT_RERANK == 1600
    # an index saved before the option re-ranks k * k_factor, as it did then
    manifest = json.loads((tmp_path / "g.index").read_text())
    del manifest["params"]["rerank"]
    (tmp_path / "g.index").write_text(json.dumps(manifest))
    older = open_index("scann", tmp_path / "g.index", DIM)
    assert isinstance(older, ScannIndex) and older._pool(10) == 400

"""The index follows the database: caught up after an interrupted ingest, rebuilt after
deletions behind its back, refused when damaged, and never searched across models.

These tests write faces with made-up vectors straight through ``facetrace.store`` (a real
SQLite file), so they need no model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete

from facetrace import store
from facetrace.app import Facetrace
from facetrace.db import FaceRow
from facetrace.errors import IndexCorruptError, ModelMismatchError
from facetrace.records import AnalysedImage, Box, Face, Quality
from facetrace.search import Searcher
from facetrace.settings import Settings

MODEL = "dlib_resnet_v1_flip" if Settings.load(env={}, data_dir="/x").flip else "dlib_resnet_v1"
Q = Quality(100, 100.0, 1.0, 0.0, 0.0)


def image(i: int, vec: np.ndarray, model: str = MODEL) -> AnalysedImage:
    face = Face(Box(0, 0, 100, 100), ((0.0, 0.0),) * 5, Q, vec.astype(np.float32), model)
    return AnalysedImage(f"img{i}.jpg", f"{i:064x}", 200, 200, "JPEG", (face,))


@pytest.fixture()
def app(tmp_path: Path) -> Facetrace:
    return Facetrace(Settings.load(env={}, data_dir=tmp_path / "data"))


def fill(
    app: Facetrace, n: int, start: int = 0, model: str = MODEL, vecs: np.ndarray | None = None
) -> np.ndarray:
    """Store ``n`` faces of one person each, ids from ``start + 1``: ``vecs``, or random."""
    if vecs is None:
        vecs = np.random.default_rng(start).normal(size=(n, 128)).astype(np.float32)
    with app.sessions.begin() as s:
        g = store.get_or_create_gallery(s, "g")
        batch = store.start_batch(s, g, "test")
        for i, v in enumerate(vecs, start):
            meta = store.ImageMeta(path=f"img{i}.jpg", subject=f"person {i}")
            store.add_image(s, g.id, batch.id, image(i, v, model), meta)
    return vecs


def load(app: Facetrace):  # type: ignore[no-untyped-def]
    with app.sessions() as s:
        return app.indexes.load(s, store.get_gallery(s, "g"), MODEL)


def test_index_catches_up_with_faces_stored_after_its_last_save(app: Facetrace) -> None:
    fill(app, 20)
    assert len(load(app)) == 20  # built and saved
    vecs = fill(app, 5, start=20)  # stored, e.g. by a run killed before saving its index
    index = load(app)
    assert len(index) == 25
    ids, scores = index.search(vecs[2], 1)
    assert scores[0, 0] > 0.999


def test_index_is_rebuilt_when_faces_vanish_behind_its_back(app: Facetrace) -> None:
    fill(app, 10)
    load(app)
    with app.sessions.begin() as s:
        s.execute(delete(FaceRow).where(FaceRow.id <= 3))
    index = load(app)
    assert len(index) == 7 and set(index.ids().tolist()) == set(range(4, 11))


def test_damaged_index_is_refused_then_rebuilt_by_reindex(app: Facetrace) -> None:
    fill(app, 10)
    load(app)
    with app.sessions() as s:
        path = app.indexes.path(store.get_gallery(s, "g"), MODEL)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(IndexCorruptError, match="reindex"):
        load(app)
    assert app.reindex() == {"g": 10}
    assert len(load(app)) == 10


def test_search_refuses_a_gallery_of_another_model(app: Facetrace) -> None:
    fill(app, 3, model="other_model_v2")
    probe = image(99, np.ones(128, np.float32))
    searcher = Searcher(app.analyzer, app.sessions, app.indexes)
    with pytest.raises(ModelMismatchError, match="other_model_v2"):
        searcher.search_faces(probe, None, 5)


def test_search_ranks_subjects_and_forget_is_immediate(app: Facetrace) -> None:
    vecs = fill(app, 30)
    probe = image(99, vecs[7] + 0.01)
    searcher = Searcher(app.analyzer, app.sessions, app.indexes)
    result = searcher.search_faces(probe, ["g"], 5)
    cands = result.faces[0].candidates
    assert [c.subject for c in cands][0] == "person 7" and len(cands) == 5
    assert app.forget("g", "person 7") == 1
    cands = searcher.search_faces(probe, ["g"], 5).faces[0].candidates
    assert "person 7" not in [c.subject for c in cands]
    assert result.to_dict()["galleries"] == [{"name": "g", "faces": 30}]


def test_tally_follows_every_insert_and_delete_even_by_hand(app: Facetrace) -> None:
    def both() -> tuple[int, int, int]:
        with app.sessions() as s:
            g = store.get_gallery(s, "g")
            t = store.tally(s, g.id, MODEL)
            return t.faces, store.face_count(s, g.id, MODEL), t.max_face_id

    fill(app, 12)
    assert both() == (12, 12, 12)
    app.forget("g", "person 3")
    assert both() == (11, 11, 12)
    with app.sessions.begin() as s:  # behind facetrace's back
        s.execute(delete(FaceRow).where(FaceRow.id.in_([1, 2])))
    assert both() == (9, 9, 12)
    fill(app, 2, start=50)
    assert both() == (11, 11, 14)
    fill(app, 1, start=60, model="other_model_v2")
    with app.sessions() as s:
        assert store.tally(s, store.get_gallery(s, "g").id, "other_model_v2").faces == 1


@pytest.mark.parametrize("target", ["exact", "usearch", "ivf", "ivf-pq", "lite.db"])
def test_reindex_to_another_backend_moves_every_gallery(
    app: Facetrace, tmp_path: Path, target: str
) -> None:
    from facetrace.cli import main
    from facetrace.index import index_files
    from facetrace.settings import read_data_settings

    vecs = fill(app, 25)
    load(app)  # the default (scann) index exists
    old = sorted(app.settings.index_dir.glob(f"*{app.settings.index_backend}.index*"))
    old = [p for p in old if not p.name.endswith(".lock")]
    assert old
    spec = str(tmp_path / target) if target.endswith(".db") else target
    assert main(["--data", str(app.settings.data_dir), "reindex", "--to", spec]) == 0
    moved = Facetrace(Settings.load(env={}, data_dir=app.settings.data_dir))
    backend = "milvus" if target.endswith(".db") else target
    assert moved.settings.index_backend == backend
    assert read_data_settings(app.settings.data_dir)["index_backend"] == backend
    assert not any(p.exists() for p in old)
    with moved.sessions() as s:
        g = store.get_gallery(s, "g")
        index = moved.indexes.load(s, g, MODEL)
        assert len(index) == 25 and index.search(vecs[4], 1)[0][0, 0] == 5
        assert index_files(moved.indexes.path(g, MODEL))
    assert moved.forget("g", "person 4") == 1
    with moved.sessions() as s:
        index = moved.indexes.load(s, store.get_gallery(s, "g"), MODEL)
        assert len(index) == 24 and 5 not in index.ids()


def test_reindex_to_an_unknown_place_is_refused(app: Facetrace) -> None:
    from facetrace.cli import main

    fill(app, 3)
    assert main(["--data", str(app.settings.data_dir), "reindex", "--to", "ftp://x"]) == 2
    assert main(["--data", str(app.settings.data_dir), "reindex", "--to", "ivf", "-g", "g"]) == 2


def test_reindex_with_options_rebuilds_every_gallery_with_them(app: Facetrace) -> None:
    from facetrace.cli import main
    from facetrace.settings import read_data_settings

    vecs = fill(app, 25)
    data = str(app.settings.data_dir)
    tuning = ["--to", "ivf-pq", "--options", "refine=fp16,nprobe=64"]
    assert main(["--data", data, "reindex", *tuning]) == 0
    assert read_data_settings(app.settings.data_dir)["index_options"] == "refine=fp16,nprobe=64"
    tuned = Facetrace(Settings.load(env={}, data_dir=app.settings.data_dir))
    index = load(tuned)
    assert (index.refine, index.nprobe, index.store.vectors.dtype) == ("fp16", 64, np.float16)
    ids, scores = index.search(vecs[4], 1)
    assert ids[0, 0] == 5 and scores[0, 0] > 0.999
    assert tuned.indexes.options == {"refine": "fp16", "nprobe": 64}
    # Back to the defaults: an empty list of options.
    assert main(["--data", data, "reindex", "--options", ""]) == 0
    index = load(Facetrace(Settings.load(env={}, data_dir=app.settings.data_dir)))
    assert (index.refine, len(index)) == ("f32", 25)


def test_bad_index_options_are_refused_and_change_nothing(app: Facetrace) -> None:
    from facetrace.cli import main
    from facetrace.settings import read_data_settings

    fill(app, 3)
    data = str(app.settings.data_dir)
    for bad in ("refine=fp16", "colour=blue", "nprobe=many", "nprobe=0", "nprobe"):
        assert main(["--data", data, "reindex", "--options", bad]) == 2, bad
    assert main(["--data", data, "reindex", "--options", "nprobe=8", "-g", "g"]) == 2
    assert "index_options" not in read_data_settings(app.settings.data_dir)
    index = load(app)
    assert index.backend == "scann" and index.nprobe_option is None


def test_a_gallery_past_the_training_threshold_trains_saves_and_forgets(app: Facetrace) -> None:
    """The default backend trains ScaNN once a gallery passes 20,000 faces; the service's
    build, forget, reopen and catch-up paths then work on the trained index."""
    from facetrace.index.scann_index import ScannIndex

    vecs = fill(app, 20_100)
    index = load(app)
    assert isinstance(index, ScannIndex) and index.exact is None
    assert index.trained_size == 20_100  # built from the database: sized for all of it
    assert index.search(vecs[[4, 20_099]], 1)[0][:, 0].tolist() == [5, 20_100]
    assert app.forget("g", "person 4") == 1
    again = load(app)  # opened from the saved, trained files
    assert isinstance(again, ScannIndex) and again.exact is None
    assert len(again) == 20_099 and 5 not in again.ids()
    assert again.search(vecs[4], 1)[0][0, 0] != 5
    more = fill(app, 3, start=30_000)
    caught_up = load(app)
    assert len(caught_up) == 20_102
    assert caught_up.search(more, 1)[0][:, 0].tolist() == [20_101, 20_102, 20_103]


def test_a_gallery_of_face_like_vectors_is_stored_in_their_subspace(app: Facetrace) -> None:
    """Vectors drawn like dlib's (``facetrace.evaluation.synthetic``) fill 84 of their 128
    dimensions: the trained index stores them so, and deletion, reopening and faces
    added later (one of them a random vector, kept whole) still work."""
    from facetrace.evaluation import synthetic
    from facetrace.index.scann_index import ScannIndex

    gallery = np.empty((20_100, 128), np.float32)
    synthetic.fill(synthetic.plan_faces(20_103, seed=5), gallery)
    vecs = fill(app, 20_100, vecs=gallery)
    index = load(app)
    assert isinstance(index, ScannIndex) and index.subspace is not None
    assert index.subspace.dims < 100 and index.outside is None
    assert index.search(vecs[[4, 20_099]], 1)[0][:, 0].tolist() == [5, 20_100]
    assert app.forget("g", "person 4") == 1
    again = load(app)
    assert isinstance(again, ScannIndex) and again.subspace is not None
    assert len(again) == 20_099 and 5 not in again.ids()
    later = np.empty((3, 128), np.float32)
    synthetic.fill(synthetic.plan_faces(20_103, seed=5), later, start=20_100)
    later[2] = np.random.default_rng(1).normal(size=128)  # no face: fills every dimension
    fill(app, 3, start=30_000, vecs=later)
    caught_up = load(app)
    assert isinstance(caught_up, ScannIndex) and len(caught_up) == 20_102
    assert caught_up.outside is not None and caught_up.outside.ids().tolist() == [20_103]
    assert caught_up.search(later, 1)[0][:, 0].tolist() == [20_101, 20_102, 20_103]

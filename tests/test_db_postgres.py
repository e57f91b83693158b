"""The schema, the store and the face tally on both backends: SQLite and a real PostgreSQL.

Every test takes ``db_url`` and runs twice: on a SQLite file and on a fresh database of
the throwaway PostgreSQL server that ``tests/postgres.py`` starts (no mocks). Faces carry
made-up vectors, written through ``facetrace.store`` as ``tests/test_gallery_index.py``
writes them, so no model is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import delete, inspect, text
from sqlalchemy.engine import Engine

from facetrace import store
from facetrace.app import Facetrace
from facetrace.db import (
    MIGRATIONS,
    Base,
    FaceRow,
    Gallery,
    IngestBatch,
    make_engine,
    migrate,
    open_database,
)
from facetrace.index.base import VectorIndex
from facetrace.service import tables as service_tables  # noqa: F401 - all the models on Base
from facetrace.settings import Settings
from tests.test_gallery_index import MODEL, fill, image

TABLES = {
    "gallery",
    "ingest_batch",
    "source_image",
    "subject",
    "face",
    "face_subject",
    "ingest_failure",
    "face_tally",
    "alembic_version",
}


@pytest.fixture()
def app(tmp_path: Path, db_url: str) -> Facetrace:
    return Facetrace(Settings.load(env={}, data_dir=tmp_path / "data", database_url=db_url))


def to_revision(engine: Engine, revision: str, up: bool = True) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.upgrade if up else command.downgrade)(cfg, revision)


def counts(app: Facetrace, model: str = MODEL) -> tuple[int, int, int]:
    """(tally's faces, faces counted row by row, tally's highest face id)."""
    with app.sessions() as s:
        g = store.get_gallery(s, "g")
        t = store.tally(s, g.id, model)
        return t.faces, store.face_count(s, g.id, model), t.max_face_id


def load_index(app: Facetrace) -> VectorIndex:
    with app.sessions() as s:
        return app.indexes.load(s, store.get_gallery(s, "g"), MODEL)


def test_migrations_build_the_declared_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        if engine.dialect.name == "postgresql":
            triggers = conn.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
            assert {"face_tally_keep", "face_tally_truncate"} <= set(triggers)
    migrate(engine)  # a second run is a no-op
    engine.dispose()
    for _ in range(2):
        with open_database(db_url)() as s:
            assert s.execute(Base.metadata.tables["gallery"].select()).all() == []


def test_the_tally_is_filled_from_faces_stored_before_it_existed(db_url: str) -> None:
    engine = make_engine(db_url)
    to_revision(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO gallery (id, name, generation, created_at) "
                "VALUES (1, 'g', 0, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO source_image (id, gallery_id, sha256, path, width, height,"
                " format, n_faces, created_at)"
                " VALUES (1, 1, 'x', 'a.jpg', 10, 10, 'JPEG', 3, CURRENT_TIMESTAMP)"
            )
        )
        for face_id, model in [(5, "m1"), (7, "m1"), (6, "m2")]:
            conn.execute(
                text(
                    'INSERT INTO face (id, image_id, gallery_id, "left", top, "right",'
                    " bottom, landmarks, quality, model, embedding, created_at)"
                    " VALUES (:id, 1, 1, 0, 0, 1, 1, '[]', '{}', :model, :emb,"
                    " CURRENT_TIMESTAMP)"
                ),
                {"id": face_id, "model": model, "emb": b"\0" * 4},
            )
    tally = text("SELECT model, faces, max_face_id FROM face_tally ORDER BY model")
    to_revision(engine, "0002")
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(tally)] == [("m1", 2, 7), ("m2", 1, 6)]
        conn.execute(text("DELETE FROM face WHERE id = 7"))  # kept from now on
        assert [tuple(r) for r in conn.execute(tally)] == [("m1", 1, 7), ("m2", 1, 6)]
        conn.commit()
    to_revision(engine, "0001", up=False)  # 0002 undone: its table and triggers gone
    assert "face_tally" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM face WHERE id = 6"))
    to_revision(engine, "head")
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(tally)] == [("m1", 1, 5)]
    engine.dispose()


def test_store_writes_and_reads_galleries_images_and_faces(db_url: str) -> None:
    sessions = open_database(db_url)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3, 128)).astype(np.float32)
    with sessions.begin() as s:
        g = store.get_or_create_gallery(s, "g")
        assert store.get_or_create_gallery(s, "g").id == g.id
        # as when another process created it first: the insert does nothing
        store._insert_if_absent(
            s, Gallery, {"name": "g", "generation": 0, "created_at": g.created_at}
        )
        assert [x.id for x in store.all_galleries(s)] == [g.id]
        batch = store.start_batch(s, g, "test")
        ids = [
            store.add_image(
                s,
                g.id,
                batch.id,
                image(i, v),
                store.ImageMeta(path=f"img{i}.jpg", subject=f"person {i % 2}", attributes={"i": i}),
            )[0]
            for i, v in enumerate(vecs)
        ]
        store.record_failure(s, g.id, batch.id, "bad.jpg", "not an image")
        store.finish_batch(s, batch.id, "done", {"images": 3, "failed": 1})
        second = store.start_batch(s, g, "again")
        assert s.get(IngestBatch, batch.id).status == "done" and second.status == "running"
    with sessions() as s:
        g = store.get_gallery(s, "g")
        assert store.known_hashes(s, g.id) == {f"{i:064x}" for i in range(3)}
        assert store.gallery_models(s, g.id) == {MODEL}
        got = [
            (i, v)
            for chunk in store.iter_vectors(s, g.id, MODEL, batch=2)
            for i, v in zip(*chunk, strict=True)
        ]
        assert [i for i, _ in got] == ids and np.array_equal(np.stack([v for _, v in got]), vecs)
        info = store.face_infos(s, ids)
        assert info[ids[1]].subject == "person 1" and info[ids[1]].image == "img1.jpg"
        assert info[ids[0]].box == [0, 0, 100, 100] and info[ids[0]].gallery == "g"
        assert store.gallery_stats(s) == [
            {"name": "g", "images": 3, "faces": 3, "subjects": 2, "failures": 1}
        ]
        subjects = store.subject_stats(s, g)
        assert [(r["name"], r["faces"]) for r in subjects] == [("person 0", 2), ("person 1", 1)]
        assert subjects[0]["attributes"] == {"i": 2}
    with sessions.begin() as s:
        forgotten = store.forget_subject(s, store.get_gallery(s, "g"), "person 0")
        assert sorted(forgotten) == [ids[0], ids[2]]
    with sessions() as s:
        g = store.get_gallery(s, "g")
        assert g.generation == 1 and store.known_hashes(s, g.id) == {f"{1:064x}"}
        assert store.tally(s, g.id, MODEL) == store.Tally(1, ids[2])


def test_tally_follows_every_insert_and_delete_even_by_raw_sql(app: Facetrace) -> None:
    fill(app, 12)
    assert counts(app) == (12, 12, 12)
    app.forget("g", "person 3")
    assert counts(app) == (11, 11, 12)
    with app.sessions.begin() as s:  # behind facetrace's back, through the ORM
        s.execute(delete(FaceRow).where(FaceRow.id.in_([1, 2])))
    assert counts(app) == (9, 9, 12)
    with app.sessions.begin() as s:  # and in raw SQL
        s.execute(text("DELETE FROM face WHERE id IN (5, 6)"))
    assert counts(app) == (7, 7, 12)
    with app.sessions() as s:  # a rolled-back delete changes nothing
        s.execute(text("DELETE FROM face"))
        assert store.tally(s, store.get_gallery(s, "g").id, MODEL).faces == 0
        s.rollback()
    assert counts(app) == (7, 7, 12)
    fill(app, 2, start=50)
    assert counts(app) == (9, 9, 14)
    with app.sessions.begin() as s:  # a face moved to another model, by hand
        s.execute(text("UPDATE face SET model = 'other_model_v2' WHERE id = 14"))
    assert counts(app) == (8, 8, 14)
    assert counts(app, "other_model_v2") == (1, 1, 14)
    fill(app, 1, start=60, model="other_model_v2")
    assert counts(app, "other_model_v2") == (2, 2, 15)
    with app.sessions.begin() as s:
        s.execute(text("DELETE FROM face"))
    assert counts(app) == (0, 0, 14)
    with app.sessions.begin() as s:  # deleting the gallery takes its tally with it
        s.execute(delete(Gallery))
    with app.sessions() as s:
        assert s.execute(text("SELECT COUNT(*) FROM face_tally")).scalar() == 0


def test_index_catches_up_and_is_rebuilt_when_faces_vanish(app: Facetrace) -> None:
    fill(app, 10)
    assert len(load_index(app)) == 10  # built and saved
    vecs = fill(app, 5, start=10)  # stored by a run killed before it saved its index
    index = load_index(app)
    assert len(index) == 15 and index.search(vecs[2], 1)[0][0, 0] == 13
    with app.sessions.begin() as s:  # deleted behind the index's back, in raw SQL
        s.execute(text("DELETE FROM face WHERE id <= 3"))
    index = load_index(app)
    assert len(index) == 12 and set(index.ids().tolist()) == set(range(4, 16))
    assert app.forget("g", "person 7") == 1  # a new generation: rebuilt
    index = load_index(app)
    assert len(index) == 11 and 8 not in index.ids()


def test_truncate_behind_facetraces_back_makes_the_index_stale(app: Facetrace) -> None:
    fill(app, 6)
    assert len(load_index(app)) == 6
    with app.sessions.begin() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("TRUNCATE face CASCADE"))  # fires no row trigger
        else:
            s.execute(text("DELETE FROM face"))  # SQLite's truncate
    assert counts(app) == (0, 0, 6)
    assert len(load_index(app)) == 0
    fill(app, 2, start=10)
    assert counts(app)[:2] == (2, 2) and len(load_index(app)) == 2

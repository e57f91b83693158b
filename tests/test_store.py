"""The database: migrations build exactly the schema the models declare, on an empty file."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from facetrace.db import Base, make_engine, migrate, open_database
from facetrace.service import tables as service_tables  # noqa: F401 - all the models on Base


def test_migrations_apply_to_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'empty.db'}"
    engine = make_engine(url)
    migrate(engine)
    names = set(inspect(engine).get_table_names())
    assert {
        "gallery",
        "source_image",
        "face",
        "subject",
        "face_subject",
        "ingest_failure",
        "ingest_batch",
        "alembic_version",
    } <= names
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    migrate(engine)  # a second run is a no-op
    engine.dispose()


def test_open_database_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for _ in range(2):
        sessions = open_database(url)
        with sessions() as s:
            assert s.execute(Base.metadata.tables["gallery"].select()).all() == []

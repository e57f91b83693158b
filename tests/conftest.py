"""Shared fixtures: where the real face photos are, and fresh data directories.

Photos are read from ``FACETRACE_FACES`` or, by default, ``../shared/faces`` beside the
repository. Tests that need them skip with a clear reason when they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def faces_root() -> Path:
    return Path(os.environ.get("FACETRACE_FACES", REPO.parent / "shared" / "faces"))


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    root = faces_root()
    if not (root / "HARDCASES.tsv").is_file():
        pytest.skip(f"real face photos not found at {root} (set FACETRACE_FACES)")
    return root


@pytest.fixture(scope="session")
def analyzer():  # type: ignore[no-untyped-def]
    """One real pipeline (dlib models load once per test session)."""
    from facetrace.pipeline import Analyzer
    from facetrace.settings import Settings

    return Analyzer.from_settings(Settings.load(env={}, data_dir="/nonexistent"))


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> tuple[int, str, str]:
    """Run the facetrace CLI in a subprocess: (exit code, stdout, stderr)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "facetrace", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "FACETRACE_WORKERS": "1", "COLUMNS": "200", **(env or {})},
        timeout=600,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """A throwaway PostgreSQL server for the whole session (see ``tests/postgres.py``)."""
    from tests.postgres import NOT_INSTALLED, running_server, server_bindir

    if server_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail(NOT_INSTALLED)
        pytest.skip(NOT_INSTALLED)
    with running_server() as server:
        yield server


@pytest.fixture()
def pg_url(postgres_server):  # type: ignore[no-untyped-def]
    """The SQLAlchemy URL of a new, empty PostgreSQL database (its engines closed after)."""
    from tests.postgres import engines_disposed

    with engines_disposed():
        yield postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database on each backend: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'facetrace.db'}"
    return str(request.getfixturevalue("pg_url"))

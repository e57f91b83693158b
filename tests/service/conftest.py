"""Fixtures for the service: an application on a fresh data directory, two agencies with a
user of every role, API tokens for each, and a gallery of real LFW faces.

``world`` is parametrized by ``db_url`` (tests/conftest.py): every test that uses it runs
on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from facetrace.service import auth, uow
from facetrace.service.server import Service, create_app
from facetrace.service.tables import ROLES, GalleryOwner
from facetrace.settings import Settings

PASSWORD = "correct horse battery"
# Three people, two photos each, from LFW: one photo of each goes in the gallery, the
# other is the probe.
PEOPLE = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody"]


def service_settings(data_dir: Path, db_url: str | None = None) -> Settings:
    env = {"FACETRACE_WORKERS": "1"}
    if db_url:
        env["FACETRACE_DATABASE_URL"] = db_url
    return Settings.load(env=env, data_dir=data_dir)


@dataclass
class World:
    """Two organisations; ``tokens[(org, role)]`` is a Bearer token for that user."""

    app: object
    client: TestClient
    service: Service
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def h(self, org: str, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[(org, role)]}"}


def seed(svc: Service) -> dict[tuple[str, str], str]:
    tokens = {}
    with uow.write(svc.sessions) as s:
        for org_name in ("north", "south"):
            org = auth.create_org(s, f"{org_name} agency")
            for role in ROLES:
                user = auth.create_user(s, org, f"{org_name}-{role}", PASSWORD, role)
                tokens[(org_name, role)], _ = auth.issue_token(s, user, "tests")
        second = auth.create_user(s, auth.get_org(s, "north agency"), "north-reviewer2",
                                  PASSWORD, "reviewer")  # fmt: skip
        tokens[("north", "reviewer2")], _ = auth.issue_token(s, second, "tests")
    return tokens


@contextmanager
def make_world(data_dir: Path, db_url: str | None = None, **options: Any) -> Iterator[World]:
    app = create_app(service_settings(data_dir, db_url), **options)
    with TestClient(app) as client:
        svc = app.state.service
        yield World(app, client, svc, seed(svc))
        svc.sessions.kw["bind"].dispose()


@pytest.fixture()
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    """The service on SQLite, then on a real PostgreSQL server: every service test runs
    on both."""
    with make_world(tmp_path / "data", db_url if db_url.startswith("postgresql") else None) as w:
        yield w


def add_gallery(svc: Service, faces_dir: Path, name: str = "records", org: str = "north agency"):
    """Ingest one photo of each of PEOPLE into a gallery owned by ``org``; the probes."""
    lfw = faces_dir / "lfw" / "images"
    photos = [sorted((lfw / p).glob("*.jpg"))[:2] for p in PEOPLE]
    root = svc.data_dir.parent / f"gallery-{name}"
    for person, (first, _second) in zip(PEOPLE, photos, strict=True):
        (root / person).mkdir(parents=True, exist_ok=True)
        (root / person / first.name).write_bytes(first.read_bytes())
    from facetrace import sources

    items = sources.from_path(
        root, max_file_bytes=10**8, max_archive_bytes=10**9, subject=None, common={}
    )
    svc.ft.ingest(items, name, workers=1)
    with uow.write(svc.sessions) as s:
        from facetrace import store

        gid = store.get_gallery(s, name).id
        s.add(GalleryOwner(gallery_id=gid, org_id=auth.get_org(s, org).id))
    return {p: second for p, (_first, second) in zip(PEOPLE, photos, strict=True)}

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

"""The public surface is what ``facetrace.__all__`` says, and every module documents itself."""

from __future__ import annotations

import ast
from pathlib import Path

import facetrace

SRC = Path(facetrace.__file__).parent


def test_public_api_is_pinned() -> None:
    assert sorted(facetrace.__all__) == sorted(
        [
            "LEAD_NOTICE",
            "SAME_PERSON_THRESHOLD",
            "AnalysedImage",
            "Analyzer",
            "Box",
            "Face",
            "FacetraceError",
            "Facetrace",
            "Quality",
            "Settings",
            "cosine",
        ]
    )
    for name in facetrace.__all__:
        assert hasattr(facetrace, name)


def test_every_module_has_a_docstring_and_stays_small() -> None:
    for path in SRC.rglob("*.py"):
        if "versions" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path} has no module docstring"
        assert len(path.read_text().splitlines()) < 600, f"{path} is over 600 lines"


def test_domain_code_never_imports_the_cli_framework() -> None:
    for path in SRC.rglob("*.py"):
        if path.name.startswith("cli") or path.name == "__main__.py":
            continue
        text = path.read_text()
        assert "import click" not in text, path


def test_models_load_lazily() -> None:
    """Importing the package loads no model weights (dlib stays unimported)."""
    import subprocess
    import sys

    code = "import sys, facetrace, facetrace.pipeline, facetrace.cli; print('dlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

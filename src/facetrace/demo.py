"""``facetrace demo``: the main job end to end on the embedded default.

With the labelled test photos at ``FACETRACE_FACES`` (default ``../shared/faces``) it
builds a gallery from the face_recognition project's known-people folders, searches a
group photo, compares two pairs and shows a photo with no face. Without them it uses the
public-domain NASA portrait of astronaut Eileen Collins that scikit-image ships (a mirrored,
resized copy is the probe) and scikit-image's photo of a coffee cup as the no-face case.
The photos are read where they are; nothing is copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from facetrace import render
from facetrace.app import Facetrace
from facetrace.sources import from_path


def shared_faces() -> Path | None:
    root = Path(os.environ.get("FACETRACE_FACES", Path.cwd().parent / "shared" / "faces"))
    knn = root / "face_recognition" / "examples" / "knn_examples"
    return root if (knn / "train").is_dir() else None


def run_demo(app: Facetrace, console: Console) -> None:
    root = shared_faces()
    if root is not None:
        _demo_shared(app, console, root)
    else:
        _demo_packaged(app, console)


def _ingest(
    app: Facetrace, console: Console, folder: Path, gallery: str, subject: str | None = None
) -> None:
    s = app.settings
    items = from_path(
        folder,
        max_file_bytes=s.max_file_bytes,
        max_archive_bytes=s.max_archive_bytes,
        subject=subject,
    )
    console.rule(f"ingest {folder} -> gallery {gallery!r}")
    render.ingest_report(console, app.ingest(items, gallery, command="facetrace demo"))


def _demo_shared(app: Facetrace, console: Console, root: Path) -> None:
    knn = root / "face_recognition" / "examples" / "knn_examples"
    _ingest(app, console, knn / "train", "demo")
    render.rows(console, "galleries", app.galleries(), ["name", "images", "faces", "subjects"])
    probe = knn / "test" / "obama_and_biden.jpg"
    console.rule(f"search {probe}")
    render.search_result(console, app.search(probe, ["demo"], k=3))
    photos = root / "face_recognition" / "examples"
    for a, b in (("obama.jpg", "obama2.jpg"), ("obama.jpg", "biden.jpg")):
        console.rule(f"compare {a} {b}")
        render.comparison(console, app.compare(photos / a, photos / b))
    noface = root / "coil20_noface" / "obj1__0.png"
    if noface.is_file():
        console.rule(f"faces {noface}")
        render.faces(console, app.faces(noface))


def _demo_packaged(app: Facetrace, console: Console) -> None:
    try:
        from PIL import Image
        from skimage import data
    except ImportError:  # pragma: no cover - the demo extra installs scikit-image
        console.print("no demo photos: install scikit-image or set FACETRACE_FACES")
        return
    folder = app.settings.data_dir / "demo-photos"
    (folder / "gallery").mkdir(parents=True, exist_ok=True)
    astronaut = Image.fromarray(data.astronaut())
    # The gallery photo is the top of the portrait; the probe, a different crop of it,
    # mirrored, smaller and saved as JPEG. (The full portrait also has a face-like mission
    # patch, which HOG finds too.)
    astronaut.crop((0, 0, 512, 300)).save(folder / "gallery" / "eileen_collins.png")
    probe = astronaut.crop((120, 30, 420, 300)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    probe.resize((200, 180)).save(folder / "probe.jpg", quality=85)
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg")
    _ingest(app, console, folder / "gallery", "demo", subject="Eileen Collins")
    console.rule("search with another crop of the portrait, mirrored and smaller")
    render.search_result(console, app.search(folder / "probe.jpg", ["demo"], k=3))
    console.rule("a photo with no face")
    render.faces(console, app.faces(folder / "coffee.jpg"))

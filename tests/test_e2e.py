"""End to end through the real command line: ingest the known people, search the unknown.

Uses ``face_recognition/examples/knn_examples``: ``train/`` is a folder per person, ``test/``
holds photos of them, two of which show two people.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facetrace.search import SAME_PERSON_THRESHOLD
from tests.conftest import run_cli

EXPECTED = {
    "alex_lacamoire1.jpg": {"alex_lacamoire"},
    "johnsnow_test1.jpg": {"kit_harington"},
    "kit_with_rose.jpg": {"kit_harington", "rose_leslie"},
    "obama1.jpg": {"obama"},
    "obama_and_biden.jpg": {"obama", "biden"},
}


@pytest.fixture(scope="module")
def knn_gallery(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("knn") / "data"
    train = faces_dir / "face_recognition" / "examples" / "knn_examples" / "train"
    code, out, err = run_cli("--data", str(data), "ingest", str(train), "-g", "known", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["images_added"] == 9 and report["faces_added"] == 9 and not report["failures"]
    return data


def test_galleries_and_subjects(knn_gallery: Path) -> None:
    code, out, _ = run_cli("--data", str(knn_gallery), "galleries", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"name": "known", "images": 9, "faces": 9, "subjects": 5, "failures": 0}
    ]
    code, out, _ = run_cli("--data", str(knn_gallery), "subjects", "-g", "known", "--json")
    names = {s["name"] for s in json.loads(out)}
    assert names == {"alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"}


@pytest.mark.parametrize("photo", sorted(EXPECTED))
def test_every_test_photo_finds_the_right_person_first(
    knn_gallery: Path, faces_dir: Path, photo: str
) -> None:
    path = faces_dir / "face_recognition" / "examples" / "knn_examples" / "test" / photo
    code, out, err = run_cli("--data", str(knn_gallery), "search", str(path), "-k", "3", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert "not an identification" in result["notice"]
    tops = []
    for face in result["faces"]:
        assert len(face["box"]) == 4 and "face_px" in face["quality"]
        best = face["candidates"][0]
        assert set(best) >= {"subject", "score", "gallery", "image", "source_url"}
        assert "face_px" in best["quality"]
        assert best["gallery"] == "known"
        scores = [c["score"] for c in face["candidates"]]
        assert scores == sorted(scores, reverse=True)
        assert len({c["subject"] for c in face["candidates"]}) == len(face["candidates"])
        tops.append((best["subject"], best["score"]))
    strong = {s for s, score in tops if score >= SAME_PERSON_THRESHOLD}
    assert strong == EXPECTED[photo], tops
    assert result["target_fpir"] == 0.01 and result["faces_searched"] == 9
    for face in result["faces"]:
        best = face["candidates"][0]
        assert 0 < best["fmr"] <= 1 and best["expected_false_matches"] == best["fmr"] * 9
        above = any(c["above_threshold"] for c in face["candidates"])
        if face["outcome"] != "inconclusive":
            assert face["outcome"] == ("potential candidate" if above else "no candidate")
        if best["subject"] in EXPECTED[photo] and best["score"] >= SAME_PERSON_THRESHOLD:
            assert face["outcome"] == "potential candidate", face


def test_compare_cli(faces_dir: Path, tmp_path: Path) -> None:
    ex = faces_dir / "face_recognition" / "examples"
    code, out, _ = run_cli(
        "--data", str(tmp_path), "compare", str(ex / "obama.jpg"), str(ex / "obama2.jpg"), "--json"
    )
    assert code == 0 and json.loads(out)["same_person"] is True
    code, out, _ = run_cli(
        "--data", str(tmp_path), "compare", str(ex / "obama.jpg"), str(ex / "biden.jpg"), "--json"
    )
    d = json.loads(out)
    assert code == 0 and d["same_person"] is False and d["score"] < d["threshold"]


def test_faces_cli_and_no_face(faces_dir: Path, tmp_path: Path) -> None:
    group = faces_dir / "compreface" / "sample_images" / "012_4.jpg"
    code, out, _ = run_cli("--data", str(tmp_path), "faces", str(group), "--json")
    faces = json.loads(out)["faces"]
    assert code == 0 and len(faces) == 4
    assert all(len(f["landmarks"]) == 5 and len(f["box"]) == 4 for f in faces)
    code, out, _ = run_cli(
        "--data", str(tmp_path), "faces", str(faces_dir / "coil20_noface" / "obj1__0.png")
    )
    assert code == 0 and "no face found" in out


def test_search_with_no_face_says_so(knn_gallery: Path, faces_dir: Path) -> None:
    code, out, _ = run_cli(
        "--data",
        str(knn_gallery),
        "search",
        str(faces_dir / "coil20_noface" / "obj2__0.png"),
        "--json",
    )
    d = json.loads(out)
    assert code == 0 and d["faces"] == [] and d["message"] == "no face found in the photo"


def test_forget_removes_from_database_and_index(
    knn_gallery: Path, faces_dir: Path, tmp_path: Path
) -> None:
    import shutil

    data = tmp_path / "copy"
    shutil.copytree(knn_gallery, data)
    code, out, err = run_cli("--data", str(data), "forget", "-g", "known", "-s", "obama", "--json")
    assert code == 0, err
    assert json.loads(out)["faces_removed"] == 2
    probe = faces_dir / "face_recognition" / "examples" / "knn_examples" / "test" / "obama1.jpg"
    code, out, _ = run_cli("--data", str(data), "search", str(probe), "-k", "10", "--json")
    subjects = [c["subject"] for f in json.loads(out)["faces"] for c in f["candidates"]]
    assert "obama" not in subjects and len(subjects) == 4  # the 4 other people
    from facetrace.app import Facetrace
    from facetrace.gallery_index import GalleryIndexes
    from facetrace.settings import Settings

    app = Facetrace(Settings.load(env={}, data_dir=data))
    with app.sessions() as s:
        from facetrace import store

        g = store.get_gallery(s, "known")
        model = app.analyzer.model
        index = GalleryIndexes(app.settings.index_dir, app.settings.index_backend).load(s, g, model)
        assert len(index) == 7
        assert store.face_count(s, g.id, model) == 7
    code, _, err = run_cli("--data", str(data), "forget", "-g", "known", "-s", "obama")
    assert code == 5 and "no subject named 'obama'" in err


def test_demo_without_the_shared_photos(tmp_path: Path) -> None:
    """On a machine without ../shared/faces the demo uses scikit-image's NASA portrait."""
    env = {"FACETRACE_FACES": str(tmp_path / "none")}
    code, out, err = run_cli("--data", str(tmp_path / "d"), "demo", env=env)
    assert code == 0, err
    assert "Eileen Collins" in out and "no face found" in out and "not an identification" in out
    code, out, err = run_cli("--data", str(tmp_path / "d"), "demo", env=env)
    assert code == 0 and "1 already in the gallery" in out

"""Ingest on real photos and a real SQLite file: resume after a kill, idempotent re-runs,
manifests, archives and bad files that are recorded while the batch goes on."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import run_cli

PEOPLE = ["Ariel_Sharon", "Colin_Powell", "Gerhard_Schroeder", "Hugo_Chavez", "Tony_Blair"]


def lfw_folder(faces_dir: Path, dest: Path, per_person: int) -> Path:
    """A folder-per-person tree of symlinks to LFW photos (nothing is copied)."""
    for name in PEOPLE:
        (dest / name).mkdir(parents=True)
        for src in sorted((faces_dir / "lfw" / "images" / name).glob("*.jpg"))[:per_person]:
            (dest / name / src.name).symlink_to(src)
    return dest


def counts(data: Path) -> dict[str, int]:
    con = sqlite3.connect(data / "facetrace.db")
    try:
        q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "images": q("select count(*) from source_image"),
            "distinct_sha": q("select count(distinct sha256) from source_image"),
            "faces": q("select count(*) from face"),
            "linked": q("select count(*) from face_subject"),
        }
    finally:
        con.close()


def stored_images(data: Path) -> int:
    """Photos stored so far; 0 while the database is still being created."""
    try:
        return counts(data)["images"] if (data / "facetrace.db").exists() else 0
    except sqlite3.OperationalError:  # tables not created yet, or briefly locked
        return 0


def index_size(data: Path) -> int:
    from facetrace import store
    from facetrace.app import Facetrace
    from facetrace.settings import Settings

    app = Facetrace(Settings.load(env={}, data_dir=data))
    with app.sessions() as s:
        g = store.get_gallery(s, "g")
        return len(app.indexes.load(s, g, app.analyzer.model))


def assert_gone(pids: list[int], seconds: float = 10.0) -> None:
    """Worker processes leave when their main process is killed outright."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"worker processes outlived their killed parent: {alive}")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def test_killed_ingest_resumes_without_loss_or_duplicates(faces_dir: Path, tmp_path: Path) -> None:
    photos = lfw_folder(faces_dir, tmp_path / "photos", per_person=8)
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "facetrace", "--data", str(data), "ingest", str(photos), "-g", "g"]
    proc = subprocess.Popen(
        [*cmd, "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and stored_images(data) < 8:
            time.sleep(0.2)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert_gone([int(c) for c in children])
    partial = counts(data)
    assert 8 <= partial["images"] < 40, "the kill should land mid-run"
    code, out, err = run_cli("--data", str(data), "ingest", str(photos), "-g", "g", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["already_in_gallery"] == partial["images"]
    assert report["images_added"] == 40 - partial["images"]
    resumed = counts(data)
    assert resumed["images"] == resumed["distinct_sha"] == 40
    assert index_size(data) == resumed["faces"]

    clean = tmp_path / "clean"
    code, _, err = run_cli("--data", str(clean), "ingest", str(photos), "-g", "g")
    assert code == 0, err
    assert counts(clean) == resumed

    code, out, _ = run_cli("--data", str(data), "ingest", str(photos), "-g", "g", "--json")
    again = json.loads(out)
    assert again["images_added"] == 0 and again["already_in_gallery"] == 40
    assert counts(data) == resumed


def test_a_large_index_is_saved_less_often() -> None:
    """A save writes the whole index, and a killed run's unsaved vectors come back from
    the database (the test above), so saves are spaced by a share of the index."""
    from facetrace.ingest import save_interval

    assert save_interval(0) == save_interval(50_000) == 500
    assert save_interval(10_000_000) == 100_000


def test_bad_files_are_recorded_and_the_batch_goes_on(faces_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos" / "Tony_Blair"
    folder.mkdir(parents=True)
    good = sorted((faces_dir / "lfw" / "images" / "Tony_Blair").glob("*.jpg"))[0]
    (folder / "good.jpg").write_bytes(good.read_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:2000])
    (folder / "notes.txt").write_text("not a photo")
    (folder / "same_bytes.jpg").write_bytes(good.read_bytes())
    (folder / "noface.png").write_bytes((faces_dir / "coil20_noface" / "obj3__0.png").read_bytes())
    data = tmp_path / "data"
    code, out, err = run_cli(
        "--data", str(data), "ingest", str(tmp_path / "photos"), "-g", "g", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    reasons = {Path(f["file"]).name: f["reason"] for f in report["failures"]}
    assert set(reasons) == {"empty.jpg", "truncated.jpg", "notes.txt"}
    assert "empty" in reasons["empty.jpg"]
    assert "trunc" in reasons["truncated.jpg"].lower()
    assert "not an image" in reasons["notes.txt"]
    assert report["images_added"] == 2 and report["faces_added"] == 1
    assert report["duplicates_in_run"] == 1
    assert [Path(p).name for p in report["no_face"]] == ["noface.png"]
    con = sqlite3.connect(data / "facetrace.db")
    stored = {Path(r[0]).name for r in con.execute("select path from ingest_failure")}
    con.close()
    assert stored == set(reasons)
    code, out, _ = run_cli("--data", str(data), "ingest", str(tmp_path / "photos"), "-g", "g")
    assert code == 0 and "failed" in out and "truncated.jpg" in out


def test_manifest_provenance_reaches_search_results(faces_dir: Path, tmp_path: Path) -> None:
    lfw = faces_dir / "lfw" / "images"
    blair = sorted((lfw / "Tony_Blair").glob("*.jpg"))
    rows = [
        {
            "path": str(blair[0]),
            "subject": "Person 17",
            "source_url": "https://records.example/17",
            "captured_at": "2019-05-01",
            "notes": "ID card",
            "document_id": "A-17",
        },
        {
            "path": str(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0]),
            "subject": "Person 18",
            "source_url": "https://records.example/18",
        },
        {"path": str(tmp_path / "missing.jpg"), "subject": "Person 19"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    csv_manifest = tmp_path / "m.csv"
    csv_manifest.write_text(f"path,subject,legal_basis\n{blair[3]},Person 17,consent form 4\n")
    data = tmp_path / "data"
    code, out, err = run_cli(
        "--data", str(data), "ingest", "--manifest", str(manifest), "-g", "g", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["images_added"] == 2 and len(report["failures"]) == 1
    assert "missing.jpg" in report["failures"][0]["file"]
    code, out, err = run_cli(
        "--data", str(data), "ingest", "--manifest", str(csv_manifest), "-g", "g", "--json"
    )
    assert code == 0 and json.loads(out)["images_added"] == 1, err
    code, out, _ = run_cli("--data", str(data), "search", str(blair[5]), "--json", "-k", "2")
    best = json.loads(out)["faces"][0]["candidates"][0]
    assert best["subject"] == "Person 17"
    assert best["source_url"] in ("https://records.example/17", None)
    code, out, _ = run_cli("--data", str(data), "subjects", "-g", "g", "--json")
    subjects = {s["name"]: s for s in json.loads(out)}
    assert subjects["Person 17"]["faces"] == 2
    assert subjects["Person 17"]["attributes"] == {"document_id": "A-17"}


def test_bad_manifest_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,name\nx.jpg,y\n")
    code, _, err = run_cli(
        "--data", str(tmp_path / "d"), "ingest", "--manifest", str(bad), "-g", "g"
    )
    assert code == 3 and "bad.csv" in err and "'path' column" in err and "Traceback" not in err


def test_archives_are_read_safely(faces_dir: Path, tmp_path: Path) -> None:
    lfw = faces_dir / "lfw" / "images"
    a = sorted((lfw / "Hugo_Chavez").glob("*.jpg"))[0]
    b = sorted((lfw / "Ariel_Sharon").glob("*.jpg"))[0]
    z = tmp_path / "gallery.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(a, "Hugo_Chavez/1.jpg")
        zf.writestr("../escape.jpg", a.read_bytes())
        zf.writestr("/abs/evil.jpg", a.read_bytes())
    t = tmp_path / "gallery.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        tf.add(b, "people/Ariel_Sharon/1.jpg")
        link = tarfile.TarInfo("people/Ariel_Sharon/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(z.read_bytes()[:100])
    data = tmp_path / "data"
    code, out, err = run_cli(
        "--data", str(data), "ingest", str(z), str(t), str(broken), "-g", "g", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["images_added"] == 2
    reasons = {f["file"].split("!/")[-1]: f["reason"] for f in report["failures"]}
    assert "unsafe path" in reasons["../escape.jpg"] and "unsafe path" in reasons["/abs/evil.jpg"]
    assert "link" in reasons["people/Ariel_Sharon/link.jpg"]
    assert any("broken.zip" in f["file"] for f in report["failures"])
    code, out, _ = run_cli("--data", str(data), "subjects", "-g", "g", "--json")
    assert {s["name"] for s in json.loads(out)} == {"Hugo_Chavez", "Ariel_Sharon"}
    assert not (tmp_path / "escape.jpg").exists()


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["search", "{missing}"], 3, "missing.jpg"),
        (["faces", "{empty}"], 3, "empty"),
        (["compare", "{text}", "{text}"], 3, "not an image"),
        (["search", "{noface}", "-g", "nope"], 5, "no gallery named 'nope'"),
        (["compare", "{noface}", "{noface}"], 4, "no face"),
        (["galleries"], 2, "FACETRACE_UPSAMPLE='lots' is not a valid int"),
    ],
)
def test_single_file_commands_fail_cleanly(
    faces_dir: Path, tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "t.jpg").write_text("hello")
    paths = {
        "missing": tmp_path / "missing.jpg",
        "empty": tmp_path / "empty.jpg",
        "text": tmp_path / "t.jpg",
        "noface": faces_dir / "coil20_noface" / "obj1__0.png",
    }
    argv = [a.format(**paths) for a in args]
    got, out, err = run_cli(
        "--data",
        str(tmp_path / "d"),
        *argv,
        env={"FACETRACE_UPSAMPLE": "lots"} if argv == ["galleries"] else None,
    )
    assert got == code, (out, err)
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_usage_errors_point_to_help(tmp_path: Path) -> None:
    code, _, err = run_cli("--data", str(tmp_path), "--detector", "bogus", "galleries")
    assert code == 2 and "'bogus' is not one of 'hog', 'cnn'" in err and "Traceback" not in err


def test_two_ingests_into_one_gallery_at_once(faces_dir: Path, tmp_path: Path) -> None:
    """Overlapping folders ingested concurrently: each photo once, index in step."""
    photos = lfw_folder(faces_dir, tmp_path / "photos", per_person=4)
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "facetrace", "--data", str(data), "ingest", str(photos), "-g", "g"]
    env = {**os.environ, "FACETRACE_WORKERS": "1"}
    run_cli("--data", str(data), "galleries")  # create the database first
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    got = counts(data)
    assert got["images"] == got["distinct_sha"] == 20
    assert index_size(data) == got["faces"]

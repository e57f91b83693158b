"""What the milvus index backend adds to the contract, against a real Milvus Lite.

Many galleries share one collection, so they must stay apart; the saved files only name
where the vectors are, so reopening, deleting and replacing must act on Milvus itself;
and a missing or unreachable Milvus must say so in one line, without secrets.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facetrace.errors import ConfigError, IndexCorruptError, IndexError_
from facetrace.index import create_index, index_files, open_index
from facetrace.index.base import save_index
from facetrace.index.milvus_client import ENV_TOKEN, ENV_URI, resolve_uri
from facetrace.index.milvus_index import MilvusIndex

DIM = 128


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "own.db")


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_galleries_in_one_collection_never_meet(uri: str) -> None:
    a = MilvusIndex(DIM, uri=uri, gallery="7")
    b = MilvusIndex(DIM, uri=uri, gallery="7")  # even the same label gets its own key
    assert a.location.collection == b.location.collection == "facetrace_faces"
    assert a.location.gallery != b.location.gallery
    va, vb = vectors(50, 1), vectors(50, 2)
    a.add(np.arange(50), va)
    b.add(np.arange(50), vb)  # the same ids, other vectors
    assert len(a) == len(b) == 50
    _, scores = a.search(vb, 5)
    assert scores.max() < 0.9  # b's vectors are not in a
    ids, scores = b.search(vb, 1)
    assert (ids[:, 0] == np.arange(50)).all() and np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert a.remove(np.arange(10)) == 10
    assert len(a) == 40 and len(b) == 50
    a.drop()
    assert len(a) == 0 and a.search(va[0], 3)[0].tolist() == [[-1, -1, -1]]
    assert sorted(b.ids().tolist()) == list(range(50))


def test_reopening_sees_the_same_vectors(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TOKEN, "s3cret-token")
    index = MilvusIndex(DIM, uri=uri, model="dlib resnet", gallery="gallery 12")
    v = vectors(200, 3)
    index.add(np.arange(200) * 2, v)
    index.meta.update(model="dlib_resnet_v1", generation=4)
    path = tmp_path / "gallery-12.index"
    index.save(path)
    again = open_index("milvus", path, DIM)
    assert isinstance(again, MilvusIndex) and again.location == index.location
    assert again.location.collection == "facetrace_dlib_resnet"
    assert again.location.gallery.startswith("gallery_12-")
    assert again.meta == index.meta and len(again) == 200
    assert sorted(again.ids().tolist()) == list(range(0, 400, 2))
    np.testing.assert_array_equal(again.search(v[:20], 5)[0], index.search(v[:20], 5)[0])
    saved = {p.name: p.read_text() for p in index_files(path)}
    assert len(saved) == 2 and not any("s3cret" in text for text in saved.values())
    location = json.loads(saved[index_files(path)[1].name])
    assert location["uri"] == uri and location["gallery"] == index.location.gallery


def test_deleting_is_immediate_for_every_client(uri: str, tmp_path: Path) -> None:
    index = MilvusIndex(DIM, uri=uri)
    v = vectors(300, 4)
    index.add(np.arange(300), v)
    index.save(tmp_path / "i.index")
    other = MilvusIndex.open(tmp_path / "i.index", DIM)
    assert len(other) == 300
    assert index.remove(np.arange(0, 300, 3)) == 100
    assert len(other) == 200 and other.remove(np.arange(0, 300, 3)) == 0
    ids, _ = other.search(v, 10)
    assert not np.isin(ids, np.arange(0, 300, 3)).any()
    other.add(np.array([0]), v[:1])  # upserts are as immediate
    assert index.search(v[0], 1)[0][0, 0] == 0 and len(index) == 201


def test_counts_follow_every_change(uri: str) -> None:
    index = MilvusIndex(DIM, uri=uri)
    assert len(index) == 0
    index.add(np.arange(100), vectors(100, 7))
    assert len(index) == 100
    index.add(np.arange(50, 150), vectors(100, 8))  # 50 replaced, 50 new
    assert len(index) == 150 == index.ids().size
    assert index.remove(np.arange(0, 200, 2)) == 75
    assert len(index) == 75 == index.ids().size
    index.drop()
    assert len(index) == 0


def test_saving_a_rebuilt_index_deletes_the_replaced_rows(uri: str, tmp_path: Path) -> None:
    path = tmp_path / "g.index"
    old = MilvusIndex(DIM, uri=uri, gallery="g")
    old.add(np.arange(100), vectors(100, 5))
    old.save(path)
    new = MilvusIndex(DIM, uri=uri, gallery="g")  # a rebuild: a new, empty index
    assert len(new) == 0
    new.add(np.arange(60), vectors(60, 6))
    new.save(path)
    assert len(old) == 0 and len(new) == 60
    assert MilvusIndex.open(path, DIM).location == new.location


def test_no_uri_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URI, raising=False)
    with pytest.raises(ConfigError) as caught:
        create_index("milvus", DIM)
    assert ENV_URI in one_line(caught)
    for bad in ("ftp://host/x", "faces.sqlite", "http://:19530"):
        with pytest.raises(ConfigError):
            MilvusIndex(DIM, uri=bad)
    with pytest.raises(ConfigError) as caught:
        MilvusIndex(DIM, uri="http://admin:hunter2@milvus:19530")
    assert "hunter2" not in one_line(caught) and ENV_TOKEN in str(caught.value)


def test_uri_forms() -> None:
    assert resolve_uri("milvus://milvus.internal:19530") == "http://milvus.internal:19530"
    assert resolve_uri("https://zilliz.example:443/") == "https://zilliz.example:443"
    assert resolve_uri("data/faces.db") == str(Path("data/faces.db").resolve())


def test_unreachable_server_is_an_index_error() -> None:
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(IndexError_) as caught:
            MilvusIndex(DIM, uri=f"milvus://127.0.0.1:{port}", token="tok-secret", timeout=2)
    message = one_line(caught)
    assert f"http://127.0.0.1:{port}" in message and "tok-secret" not in message
    assert not isinstance(caught.value, IndexCorruptError)


def _manifest(path: Path, uri: str, collection: str) -> None:
    location = {"format": "facetrace-milvus-location", "uri": uri}
    location.update(collection=collection, gallery="g-000000000000")
    save_index(
        path,
        backend="milvus",
        dim=DIM,
        count=0,
        params={"metric": "COSINE", "index_type": "FLAT"},
        meta={},
        writers={"milvus.json": lambda p: p.write_text(json.dumps(location))},
    )


def test_missing_collection_or_database_is_index_corrupt(uri: str, tmp_path: Path) -> None:
    MilvusIndex(DIM, uri=uri)  # the database exists
    _manifest(tmp_path / "a.index", uri, "facetrace_never_made")
    with pytest.raises(IndexCorruptError) as caught:
        open_index("milvus", tmp_path / "a.index", DIM)
    message = one_line(caught)
    assert uri in message and "facetrace_never_made" in message and "reindex" in message
    gone = str(tmp_path / "gone.db")
    _manifest(tmp_path / "b.index", gone, "facetrace_faces")
    with pytest.raises(IndexCorruptError, match="gone.db"):
        open_index("milvus", tmp_path / "b.index", DIM)
    assert not Path(gone).exists()


def test_one_collection_holds_one_dimension(uri: str) -> None:
    MilvusIndex(DIM, uri=uri, collection="facetrace_dims")
    with pytest.raises(IndexError_, match="128-d"):
        MilvusIndex(64, uri=uri, collection="facetrace_dims")


_SAVE_FOREVER = """
import sys
from pathlib import Path
import numpy as np
from facetrace.index import create_index
path = Path(sys.argv[1])
rng = np.random.default_rng(0)
index = create_index("milvus", 128)
step = 0
while True:
    index.add(np.arange(step * 500, step * 500 + 500), rng.standard_normal((500, 128)))
    index.meta["steps"] = step + 1
    index.save(path)
    step += 1
"""


def test_killed_saver_leaves_a_whole_index(tmp_path: Path) -> None:
    """Milvus Lite serves one process; a killed one leaves its database and manifest whole."""
    db, path = str(tmp_path / "saver.db"), tmp_path / "faces.index"
    env = {**os.environ, ENV_URI: db}
    proc = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, str(path)], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(index_files(path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        with pytest.raises(IndexError_, match="another process"):
            MilvusIndex(DIM, uri=db)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    index = open_index("milvus", path, DIM)
    steps = index.meta["steps"]
    # Vectors added after the last save stay in Milvus: one step more at most. Milvus
    # Lite may replay a flushed batch twice (see milvus_index): len() counts the copies.
    ids = index.ids()
    assert set(range(500 * steps)) <= set(ids.tolist()) <= set(range(500 * (steps + 1)))
    assert len(index) >= ids.size >= 500 * steps
    found, _ = index.search(np.ones(DIM), 50)
    assert len(set(found[0].tolist())) == 50

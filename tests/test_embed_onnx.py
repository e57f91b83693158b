"""dlib's ResNet converted to ONNX gives dlib's own vectors, refuses files it does not
understand, and is built once into its cache.

Chips are cut from real LFW photos the way the pipeline cuts them (HOG box, 5-point
landmarks, ``dlib.get_face_chip``) and embedded by both backends; the vectors are compared
plain and flipped, one chip per call and all in one call.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from facetrace.dlib_dnn import Conv, _Reader, read_network
from facetrace.embed import DlibEmbedder, normalise
from facetrace.embed_onnx import (
    CONVERTER_VERSION,
    OnnxDlibEmbedder,
    build_onnx,
    cache_dir,
    make_session,
    onnx_model,
)
from facetrace.errors import ConfigError, InputError
from facetrace.models import LANDMARKS_5, RECOGNITION, model_file

LIMIT = 1e-4  # cosine distance to dlib's vector; the issue allows 1e-3
PEOPLE = ("Aaron_Peirsol", "Angelina_Jolie", "Colin_Powell", "Gloria_Macapagal_Arroyo")


@pytest.fixture(scope="module")
def chips(faces_dir: Path, analyzer) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    from facetrace.decode import decode_file
    from facetrace.detect import find_faces

    out = []
    for person in PEOPLE:
        for path in sorted((faces_dir / "lfw" / "images" / person).glob("*.jpg"))[:2]:
            _, img = decode_file(path, max_pixels=10**8, max_file_bytes=10**8)
            found = find_faces(img.pixels, analyzer.detector, max_side=analyzer.max_side)
            out.append(analyzer.aligner.align(img.pixels, found[0].box).chip)
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 - np.sum(normalise(a) * normalise(b), axis=1)


@pytest.mark.parametrize("flip", [False, True])
def test_vectors_match_dlib_single_and_batched(chips, cache: Path, flip: bool) -> None:  # type: ignore[no-untyped-def]
    reference = DlibEmbedder(flip=flip).embed(chips)
    onnx = OnnxDlibEmbedder(flip=flip, cache=cache)
    batched = onnx.embed(chips)
    single = np.concatenate([onnx.embed([c]) for c in chips])
    for got in (batched, single):
        assert got.shape == (len(chips), 128) and got.dtype == np.float32
        assert cosine_distance(got, reference).max() < LIMIT
        assert np.abs(got - reference).max() < 1e-4  # the raw vectors, not only their angle


def test_same_model_ids_as_dlib_so_vectors_are_interchangeable(cache: Path) -> None:
    for flip in (False, True):
        onnx, ref = OnnxDlibEmbedder(flip=flip, cache=cache), DlibEmbedder(flip=flip)
        assert (onnx.model, onnx.dim, onnx.variant) == (ref.model, ref.dim, ref.variant)
    assert OnnxDlibEmbedder(cache=cache).embed([]).shape == (0, 128)


def test_wrong_chip_is_refused(cache: Path) -> None:
    onnx = OnnxDlibEmbedder(cache=cache)
    with pytest.raises(InputError, match="150 x 150 x 3 uint8"):
        onnx.embed([np.zeros((100, 100, 3), np.uint8)])
    with pytest.raises(InputError):
        onnx.embed([np.zeros((150, 150, 3), np.float32)])
    with pytest.raises(ConfigError, match="threads"):
        OnnxDlibEmbedder(threads=0)


def test_parsed_network_is_dlibs_anet_type() -> None:
    net = read_network(model_file(RECOGNITION))
    assert net.input.size == (150, 150)
    assert np.allclose(net.input.mean, (122.782, 117.001, 104.298), atol=1e-4)
    convs = [layer for layer in net.layers if isinstance(layer, Conv)]
    assert len(convs) == 29 and convs[0].weight.shape == (32, 3, 7, 7)
    assert convs[0].stride == (2, 2) and convs[0].pad == (0, 0) and convs[1].pad == (1, 1)


def test_dlib_integer_and_float_encodings() -> None:
    # margin and distance threshold of loss_metric_2 as they open the shipped file
    r = _Reader(bytes.fromhex("030ad7a3811c 039a99998118 82ff01 0100"), "x")
    assert r.real() == float(np.float32(0.04)) and r.real() == float(np.float32(0.6))
    assert r.sint() == -0x1FF and r.sint() == 0
    with pytest.raises(ConfigError, match="ends early"):
        r.sint()


def _damaged(original: bytes) -> dict[str, bytes]:
    first_max_pool = original.index(b"max_pool_2")
    return {
        "truncated": original[: len(original) // 2],
        "trailing": original + b"\x00",
        "garbage": bytes(range(256)) * 64,
        "empty": b"",
        "unknown_layer_version": original.replace(b"con_4", b"con_9", 1),
        "other_architecture": original[:first_max_pool]
        + b"avg_pool_2"
        + original[first_max_pool + 10 :],
    }


@pytest.mark.parametrize(
    "case",
    ["truncated", "trailing", "garbage", "empty", "unknown_layer_version", "other_architecture"],
)
def test_damaged_or_unknown_dat_is_refused(tmp_path: Path, case: str) -> None:
    bad = tmp_path / "model.dat"
    bad.write_bytes(_damaged(model_file(RECOGNITION).read_bytes())[case])
    out = tmp_path / "cache"
    with pytest.raises(ConfigError, match="not a dlib face-recognition network") as info:
        onnx_model(bad, out)
    assert str(bad) in str(info.value)
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_a_dlib_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    onnx = OnnxDlibEmbedder(weights=model_file(LANDMARKS_5), cache=tmp_path)
    with pytest.raises(ConfigError, match="not a dlib face-recognition network"):
        onnx.embed([np.zeros((150, 150, 3), np.uint8)])


def test_cache_is_built_once_and_reused(chips, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    first = OnnxDlibEmbedder(cache=tmp_path).embed(chips[:1])
    (built,) = tmp_path.iterdir()
    digest = hashlib.sha256(model_file(RECOGNITION).read_bytes()).hexdigest()
    assert built.name == f"dlib_resnet_v1-{digest}-c{CONVERTER_VERSION}.onnx"
    before = built.stat()
    again = OnnxDlibEmbedder(flip=True, cache=tmp_path)
    again.embed(chips[:1])
    after = built.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert list(tmp_path.iterdir()) == [built]
    assert np.array_equal(OnnxDlibEmbedder(cache=tmp_path).embed(chips[:1]), first)


def test_damaged_cache_file_is_rebuilt(chips, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = onnx_model(model_file(RECOGNITION), tmp_path)
    path.write_bytes(b"not a model")
    vec = OnnxDlibEmbedder(cache=tmp_path).embed(chips[:1])
    assert cosine_distance(vec, DlibEmbedder().embed(chips[:1])).max() < LIMIT


def test_builds_at_the_same_time_leave_one_whole_file(tmp_path: Path) -> None:
    data = model_file(RECOGNITION).read_bytes()
    path = tmp_path / "m.onnx"
    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_onnx(data, "x", path)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    make_session(path)  # loads


def test_cache_dir_from_environment(tmp_path: Path) -> None:
    assert cache_dir({"FACETRACE_MODEL_CACHE": str(tmp_path)}) == tmp_path
    assert cache_dir({}).name == "models"

"""The decode stage on real files and on files made here to be awkward.

Every hard case in ``HARDCASES.tsv`` and every file under ``pillow_hopper/`` and
``compreface/`` must either decode to upright RGB uint8 pixels or be refused with an
``InputError`` whose message starts with the file's path; no other exception may escape.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetrace.decode import (
    decode_bytes,
    decode_file,
    downscale,
    read_file,
    rotate,
    sha256_hex,
)
from facetrace.errors import (
    CorruptImageError,
    EmptyFileError,
    ImageTooLargeError,
    InputError,
    NotAnImageError,
    UnreadableFileError,
)
from facetrace.records import DecodedImage
from tests.conftest import faces_root

MAX_PIXELS = 100_000_000
MAX_FILE_BYTES = 200 * 1024 * 1024
ROOT = faces_root()

# Files that must be refused, with the error class and a word the reason must contain.
REFUSED: dict[str, tuple[type[InputError], str]] = {
    "compreface/imgtools_test_files/corrupted.png": (CorruptImageError, "damaged PNG"),
    "compreface/imgtools_test_files/empty.png": (NotAnImageError, "text file"),
    "compreface/imgtools_test_files/truncated.jpg": (CorruptImageError, "truncated"),
    "pillow_hopper/truncated_jpeg.jpg": (CorruptImageError, "truncated"),
    "pillow_hopper/truncated_image.png": (CorruptImageError, "truncated"),
    "pillow_hopper/hopper_bad.p7": (CorruptImageError, "damaged XVTHUMB"),
    "pillow_hopper/hopper_bad_checksum.msp": (CorruptImageError, "checksum"),
    "pillow_hopper/hopper_unknown_pixel_mode.tif": (CorruptImageError, "pixel mode"),
    "pillow_hopper/hopper_naxis_zero.fits": (CorruptImageError, "no image data"),
    "face_recognition/examples/short_hamilton_clip.mp4": (NotAnImageError, "MP4 video"),
    "facenet_pytorch/examples/video.mp4": (NotAnImageError, "MP4 video"),
}
# Pillow test files in formats Pillow does not open by default (GD, WAL, MIC without
# olefile) or TIFF compressions its libtiff may lack: refusing them is fine.
MAY_BE_REFUSED = {
    "pillow_hopper/hopper.gd",
    "pillow_hopper/hopper.wal",
    "pillow_hopper/hopper.mic",
    "pillow_hopper/hopper_webp.tif",
}
TEXT_SUFFIXES = {".tsv", ".md", ".txt", ".xml"}


def _hardcases() -> list[tuple[str, str]]:
    """(path relative to the faces folder, tags) per file; folder rows list their files."""
    table = ROOT / "HARDCASES.tsv"
    if not table.is_file():
        return []
    with table.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = []
    for row in rows:
        path = ROOT / row["path"]
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        out += [(p.relative_to(ROOT).as_posix(), row["tags"]) for p in files]
    return out


def _other_files() -> list[str]:
    """Files under pillow_hopper/ and compreface/ not already listed as hard cases."""
    listed = {rel for rel, _ in _hardcases()}
    found = (p for d in ("pillow_hopper", "compreface") for p in (ROOT / d).rglob("*"))
    return sorted(
        rel for p in found if p.is_file() and (rel := p.relative_to(ROOT).as_posix()) not in listed
    )


def _decode(path: Path) -> DecodedImage | InputError:
    """Decoded image or the InputError it raised; any other exception fails the test."""
    try:
        data, image = decode_file(path, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)
    except InputError as e:
        assert str(e).startswith(f"{path}: "), str(e)
        assert e.reason and e.exit_code == 3
        return e
    assert data == path.read_bytes()
    assert image.source == str(path)
    return image


def assert_rgb(pixels: np.ndarray) -> None:
    assert pixels.dtype == np.uint8
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.shape[0] > 0 and pixels.shape[1] > 0
    assert pixels.flags.c_contiguous and pixels.flags.writeable


def _check(rel: str, *, must_decode: bool) -> None:
    outcome = _decode(ROOT / rel)
    expected = REFUSED.get(rel)
    if Path(rel).suffix in TEXT_SUFFIXES:
        expected = (NotAnImageError, "text file")
    if expected:
        cls, word = expected
        assert isinstance(outcome, cls), f"{rel}: expected {cls.__name__}, got {outcome!r}"
        assert word in str(outcome)
    elif isinstance(outcome, InputError):
        assert not must_decode and rel in MAY_BE_REFUSED, f"unexpectedly refused: {outcome}"
    else:
        assert_rgb(outcome.pixels)
        assert outcome.format


@pytest.mark.parametrize(("rel", "tags"), [pytest.param(*row, id=row[0]) for row in _hardcases()])
def test_hardcase_decodes_or_is_refused(faces_dir: Path, rel: str, tags: str) -> None:
    refusable = {"corrupt_file", "video"} & set(tags.split(";"))
    assert refusable or rel not in REFUSED
    _check(rel, must_decode=not refusable)


@pytest.mark.parametrize("rel", _other_files())
def test_pillow_and_compreface_file_decodes_or_is_refused(faces_dir: Path, rel: str) -> None:
    _check(rel, must_decode=False)


@pytest.mark.parametrize("ext", ["jpg", "webp"])
@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_is_applied(faces_dir: Path, orientation: int, ext: str) -> None:
    folder = faces_dir / "pillow_hopper"
    reference = _decode(folder / f"hopper.{ext}")
    turned = _decode(folder / f"hopper_orientation_{orientation}.{ext}")
    assert isinstance(reference, DecodedImage) and isinstance(turned, DecodedImage)
    assert turned.pixels.shape == reference.pixels.shape
    diff = np.abs(turned.pixels.astype(int) - reference.pixels.astype(int)).mean()
    assert diff < 10, f"orientation {orientation}: mean difference {diff:.1f}"  # ~60 if ignored


def test_exif_orientation_turns_a_rectangle(faces_dir: Path) -> None:
    image = _decode(faces_dir / "pillow_hopper" / "orientation_rectangle.jpg")
    assert isinstance(image, DecodedImage)
    assert (image.width, image.height) == (1, 2)  # stored 2x1, EXIF says turn it


def test_wide_range_files_are_scaled_not_clipped(faces_dir: Path) -> None:
    folder = faces_dir / "pillow_hopper"
    eight = _decode(folder / "hopper_8bit.pgm")
    assert isinstance(eight, DecodedImage)
    for name in ("hopper_16bit.pgm", "hopper_16bit_plain.pgm", "hopper.pfm", "hopper.spider"):
        image = _decode(folder / name)
        assert isinstance(image, DecodedImage)
        diff = np.abs(image.pixels.astype(int) - eight.pixels.astype(int)).mean()
        assert diff < 3, f"{name}: mean difference {diff:.1f} from the 8-bit file"


# --- files made here -------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _refusal(data: bytes, cls: type[InputError], *, max_pixels: int = MAX_PIXELS) -> str:
    with pytest.raises(cls) as info:
        decode_bytes(data, "upload.bin", max_pixels=max_pixels)
    message = str(info.value)
    assert message.startswith("upload.bin: ")
    return message


def _pixels(data: bytes) -> np.ndarray:
    image = decode_bytes(data, "made.img", max_pixels=MAX_PIXELS)
    assert_rgb(image.pixels)
    return image.pixels


def test_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty.jpg", b"")
    with pytest.raises(EmptyFileError, match=r"empty\.jpg: the file is empty"):
        decode_file(path, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)
    _refusal(b"", EmptyFileError)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFileError, match=r"nope\.jpg: no such file"):
        read_file(tmp_path / "nope.jpg", max_file_bytes=MAX_FILE_BYTES)
    with pytest.raises(UnreadableFileError, match="is a directory"):
        decode_file(tmp_path, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "locked.png", b"\x89PNG")
    path.chmod(0)
    try:
        with pytest.raises(UnreadableFileError, match="permission denied"):
            read_file(path, max_file_bytes=MAX_FILE_BYTES)
    finally:
        path.chmod(0o600)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(UnreadableFileError, match="not a regular file"):
        read_file(tmp_path / "pipe.jpg", max_file_bytes=MAX_FILE_BYTES)


def test_file_over_the_byte_cap_is_refused_before_reading(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.png", _save(Image.new("RGB", (64, 64), "red"), "PNG"))
    with pytest.raises(ImageTooLargeError, match=r"big\.png: file is \d+ bytes, over the limit"):
        read_file(path, max_file_bytes=100)
    assert read_file(path, max_file_bytes=path.stat().st_size) == path.read_bytes()


def test_random_bytes_are_not_an_image() -> None:
    data = np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert "not an image" in _refusal(data, NotAnImageError)


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        (b"name,age\nAda,36\n" * 20, "looks like a text file"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(64), "MP4 video"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(64), "PDF document"),
        (b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
    ],
)
def test_common_non_images_are_named(data: bytes, looks_like: str) -> None:
    assert looks_like in _refusal(data, NotAnImageError)


def test_zip_archive_is_named() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("photo.jpg", b"not really")
    assert "ZIP archive" in _refusal(buf.getvalue(), NotAnImageError)


def test_truncated_jpeg(faces_dir: Path, tmp_path: Path) -> None:
    data = (faces_dir / "face_recognition" / "examples" / "obama_small.jpg").read_bytes()
    path = _write(tmp_path, "half.jpg", data[: len(data) // 2])
    with pytest.raises(CorruptImageError, match=r"half\.jpg: damaged JPEG image: .*truncated"):
        decode_file(path, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)


def test_damaged_header_is_corrupt_not_unknown() -> None:
    data = bytearray(_save(Image.new("RGB", (8, 8)), "PNG"))
    data[12:16] = b"JUNK"  # the IHDR chunk's type
    assert "damaged PNG image" in _refusal(bytes(data), CorruptImageError)


def test_sixteen_bit_png_spans_the_full_range() -> None:
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    pixels = _pixels(_save(Image.fromarray(ramp), "PNG"))
    gray = pixels[:, :, 0].astype(int)
    assert gray.min() == 0 and gray.max() == 255  # not clipped to 255 from the start
    assert (np.diff(gray.ravel()) >= 0).all()
    assert (pixels[:, :, 0] == pixels[:, :, 2]).all()


def test_float_and_int32_tiffs_are_scaled() -> None:
    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    assert _pixels(_save(Image.fromarray(unit, "F"), "TIFF"))[:, :, 0].max() == 255
    wide = np.linspace(-1e6, 1e6, 64).astype(np.int32).reshape(8, 8)
    gray = _pixels(_save(Image.fromarray(wide, "I"), "TIFF"))[:, :, 0]
    assert gray.min() == 0 and gray.max() == 255 and len(np.unique(gray)) > 32


def test_transparent_png_is_composited_onto_white() -> None:
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[:, :10] = (0, 0, 0, 0)  # transparent black
    rgba[:, 10:] = (200, 30, 40, 255)  # opaque red
    pixels = _pixels(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (pixels[:, :10] == 255).all()
    assert (pixels[:, 10:] == (200, 30, 40)).all()


def test_palette_png_with_and_without_transparency() -> None:
    palette = Image.new("P", (4, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putdata([0, 0, 1, 1])
    assert _pixels(_save(palette, "PNG"))[0].tolist() == [[255, 0, 0]] * 2 + [[0, 0, 255]] * 2
    see_through = _pixels(_save(palette, "PNG", transparency=0))
    assert see_through[0].tolist() == [[255, 255, 255]] * 2 + [[0, 0, 255]] * 2


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # full magenta + yellow = red
    pixels = _pixels(_save(cmyk, "JPEG", quality=95))
    assert np.abs(pixels.astype(int) - (255, 0, 0)).max() < 8


@pytest.mark.parametrize("mode", ["1", "L", "LA", "I;16", "YCbCr", "CMYK", "LAB"])
def test_other_modes_become_rgb(mode: str) -> None:
    image = Image.new("RGB", (16, 8), (90, 140, 200)).convert(mode)
    fmt = "JPEG" if mode == "YCbCr" else "TIFF"
    pixels = _pixels(_save(image, fmt))
    assert pixels.shape == (8, 16, 3)


def test_first_frame_of_an_animated_gif() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert (_pixels(data) == (255, 0, 0)).all()


def test_real_bomb_is_refused_from_the_header() -> None:
    data = _save(Image.new("1", (6000, 6000)), "PNG")
    assert len(data) < 100_000
    message = _refusal(data, ImageTooLargeError, max_pixels=10_000_000)
    assert "6000x6000 pixels exceeds the limit of 10,000,000 pixels" in message


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A 1-bit PNG that claims ``width`` x ``height`` but holds no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b""))
    return b"\x89PNG\r\n\x1a\n" + chunks + _png_chunk(b"IEND", b"")


def test_header_beyond_pillows_own_limit_is_refused_by_ours() -> None:
    """Pillow alone raises DecompressionBombError here; we must say how big and why."""
    limit = Image.MAX_IMAGE_PIXELS
    message = _refusal(_png_header_only(40000, 40000), ImageTooLargeError)
    assert "40000x40000 pixels exceeds the limit of 100,000,000 pixels" in message
    assert limit == Image.MAX_IMAGE_PIXELS


def test_size_between_pillows_warning_and_our_cap_is_not_a_warning() -> None:
    """9500x9500 is over Pillow's warning threshold but under our cap: no warning escapes
    (pytest turns warnings into errors); the missing pixel data makes it corrupt."""
    assert (Image.MAX_IMAGE_PIXELS or 0) < 9500 * 9500
    assert "damaged PNG image" in _refusal(_png_header_only(9500, 9500), CorruptImageError)


@pytest.mark.parametrize(
    "name",
    [
        "hopper.jpg",
        "hopper.png",
        "hopper.gif",
        "hopper.webp",
        "hopper.tif",
        "hopper.bmp",
        "avif/hopper.avif",
        "avif/hopper.heif",
        "hopper_16bit.pgm",
        "hopper.psd",
        "hopper.ico",
        "hopper.pfm",
    ],
)
def test_damaged_copies_never_raise_anything_but_input_errors(faces_dir: Path, name: str) -> None:
    original = (faces_dir / "pillow_hopper" / name).read_bytes()
    rng = np.random.default_rng(len(original))
    for trial in range(30):
        data = bytearray(original)
        if trial % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        else:  # scribble over the header (odd trials) or anywhere (even trials)
            span = 64 if trial % 2 else len(data)
            for pos in rng.integers(0, min(span, len(data)), size=int(rng.integers(1, 10))):
                data[pos] = int(rng.integers(256))
        try:
            image = decode_bytes(bytes(data), name, max_pixels=10_000_000)
        except InputError as e:
            assert str(e).startswith(f"{name}: ")
        else:
            assert_rgb(image.pixels)


def test_decode_file_returns_the_bytes_and_names_the_source(tmp_path: Path) -> None:
    path = _write(tmp_path, "red.bmp", _save(Image.new("RGB", (5, 3), "red"), "BMP"))
    data, image = decode_file(path, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)
    assert data == path.read_bytes()
    assert (image.source, image.format, image.width, image.height) == (str(path), "BMP", 5, 3)
    assert sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_downscale() -> None:
    big = np.zeros((3000, 2000, 3), np.uint8)
    small, scale = downscale(big, 1000)
    assert small.shape == (1000, 667, 3) and small.dtype == np.uint8
    assert scale == pytest.approx(1 / 3)
    same, one = downscale(big, 3000)
    assert same is big and one == 1.0
    with pytest.raises(ValueError):
        downscale(big, 0)


def test_rotate_is_counter_clockwise_like_pillow() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    assert rotate(pixels, 0) is pixels
    for degrees in (90, 180, 270):
        turned = rotate(pixels, degrees)
        expected = np.asarray(Image.fromarray(pixels).rotate(degrees, expand=True))
        assert turned.flags.c_contiguous
        assert np.array_equal(turned, expected)
    assert rotate(pixels, 90).shape == (6, 4, 3)
    assert np.array_equal(rotate(rotate(pixels, 90), 270), pixels)
    with pytest.raises(ValueError):
        rotate(pixels, 45)

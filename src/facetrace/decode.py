"""Decode stage: image files and bytes in, upright 8-bit RGB pixels out.

This module owns everything between a path (or an upload's bytes) and a ``DecodedImage``:
reading a file under a byte cap, identifying the format, refusing decompression bombs
before any pixel data is decoded, applying EXIF orientation and converting every Pillow
mode to RGB. It also owns the two pixel helpers later stages share: ``downscale`` and
``rotate``.

Conventions, stated once:
- Pixels are ``numpy.uint8`` arrays of shape (H, W, 3), RGB, C-contiguous and writable,
  upright after EXIF orientation (``ImageOps.exif_transpose``). An EXIF block too damaged
  to read is ignored, as Pillow itself does: the pixels are used as stored.
- Multi-frame files (GIF, APNG, TIFF pages, ICO sizes) give their first or default frame.
- Transparent areas are composited onto white. 16-bit data is scaled by 255/65535; float
  data in 0..1 or 0..255 is scaled to 0..255, other ranges are stretched min..max. Nothing
  is clipped. Embedded ICC profiles are not applied (CMYK is converted naively).
- Every failure is an ``InputError`` subclass raised with ``path=source``, so the message
  reads ``"<source>: <reason>"``; no other exception leaves ``decode_bytes`` (a
  ``ValueError`` from ``downscale``/``rotate`` means a programming error, not bad input).
- The pixel cap ``max_pixels`` is checked from the header, before decoding. Pillow's own
  decompression-bomb check is bypassed for opening (this module opens files through
  Pillow's plugin registry itself) and its warnings are silenced locally; the global
  ``Image.MAX_IMAGE_PIXELS`` is never changed. A few plugins (WebP, TIFF tiles) still
  refuse more than ``2 * Image.MAX_IMAGE_PIXELS``; that, too, becomes ImageTooLargeError.
- Pillow's warnings while decoding are suppressed with ``warnings.catch_warnings`` (not
  thread-safe before Python 3.14: at worst, another thread's warnings are shown or hidden).
- Truncated files are refused (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off). HEIF
  support (pillow-heif) is registered lazily, once, on the first decode.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from facetrace.errors import (
    CorruptImageError,
    EmptyFileError,
    ImageTooLargeError,
    InputError,
    NotAnImageError,
    UnreadableFileError,
)
from facetrace.records import DecodedImage

# Exceptions with which a Pillow plugin says "these bytes are not my format" (as Image.open).
_NOT_THIS_FORMAT = (SyntaxError, IndexError, TypeError, struct.error)

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_COMMON_TIFF_CODECS = {"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"}


def read_file(path: Path, *, max_file_bytes: int) -> bytes:
    """Return the bytes of ``path``, refusing missing, special, empty and oversized files.

    The size is checked with ``stat`` before anything is read.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UnreadableFileError("no such file; check the path", path=path) from None
    except PermissionError:
        raise UnreadableFileError("permission denied", path=path) from None
    except OSError as e:
        raise UnreadableFileError(f"cannot be read ({e.strerror or e})", path=path) from None
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableFileError("is a directory, not an image file", path=path)
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFileError("is not a regular file (a device, pipe or socket)", path=path)
    if st.st_size == 0:
        raise EmptyFileError("the file is empty (0 bytes)", path=path)
    if st.st_size > max_file_bytes:
        raise ImageTooLargeError(_too_many_bytes(st.st_size, max_file_bytes), path=path)
    try:
        with path.open("rb") as fh:
            data = fh.read(max_file_bytes + 1)
    except OSError as e:
        raise UnreadableFileError(f"cannot be read ({e.strerror or e})", path=path) from None
    if not data:
        raise EmptyFileError("the file is empty (0 bytes)", path=path)
    if len(data) > max_file_bytes:  # it grew between stat and read
        raise ImageTooLargeError(_too_many_bytes(len(data), max_file_bytes), path=path)
    return data


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def decode_bytes(data: bytes, source: str, *, max_pixels: int) -> DecodedImage:
    """Decode ``data`` to upright RGB pixels; ``source`` names it in every error message.

    Raises EmptyFileError, NotAnImageError, CorruptImageError or ImageTooLargeError, and
    nothing else: any unexpected failure inside Pillow or a plugin becomes
    CorruptImageError, so one odd file never stops a batch.
    """
    if not data:
        raise EmptyFileError("the file is empty (0 bytes)", path=source)
    _register_heif()
    try:
        with warnings.catch_warnings():
            # Pillow warns about odd-but-readable files (bad EXIF, unexpected ICO sizes,
            # deprecated formats, its own bomb check that we replace); none is actionable.
            warnings.simplefilter("ignore")
            return _decode(data, source, max_pixels)
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(_bomb_reason(str(e), max_pixels), path=source) from e
    except MemoryError as e:
        raise ImageTooLargeError(
            "not enough memory to decode this image; lower max_pixels or free memory",
            path=source,
        ) from e
    except Exception as e:  # deliberate: no raw exception may escape the decode stage
        raise CorruptImageError(f"cannot be decoded: {_plain(e)}", path=source) from e


def decode_file(path: Path, *, max_pixels: int, max_file_bytes: int) -> tuple[bytes, DecodedImage]:
    """Read and decode ``path``; return its bytes (for hashing and storing) and pixels."""
    data = read_file(path, max_file_bytes=max_file_bytes)
    return data, decode_bytes(data, str(path), max_pixels=max_pixels)


def downscale(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``pixels`` so that the longer side is ``max_side``; return it and the scale.

    The scale is new size / original size (< 1; divide coordinates found in the small
    image by it). An image already small enough is returned as is, with scale 1.0.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, not {max_side}")
    height, width = pixels.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return pixels, 1.0
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(np.ascontiguousarray(pixels)).resize(
        size, Image.Resampling.LANCZOS, reducing_gap=3.0
    )
    return np.array(small), scale


def rotate(pixels: np.ndarray, degrees: int) -> np.ndarray:
    """Turn ``pixels`` counter-clockwise by a multiple of 90 degrees (a contiguous copy).

    0 (or 360) returns ``pixels`` itself. Matches ``PIL.Image.rotate(degrees)``.
    """
    if degrees % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, not {degrees}")
    turns = (degrees // 90) % 4
    if turns == 0:
        return pixels
    return np.ascontiguousarray(np.rot90(pixels, turns))


# --- decoding -------------------------------------------------------------------------


@functools.cache
def _register_heif() -> bool:
    """Teach Pillow to open HEIF/HEIC (iPhone photos), once; False if pillow-heif is absent."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _decode(data: bytes, source: str, max_pixels: int) -> DecodedImage:
    with _open(data, source) as im:
        fmt = im.format or "image"
        width, height = im.size
        if width <= 0 or height <= 0:
            raise CorruptImageError(
                f"damaged {fmt} image: no pixels ({width}x{height})", path=source
            )
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"{width}x{height} pixels exceeds the limit of {max_pixels:,} pixels; "
                "raise the max_pixels setting (FACETRACE_MAX_PIXELS) to accept it",
                path=source,
            )
        try:
            im.load()
        except (Image.DecompressionBombError, MemoryError):
            raise
        except Exception as e:
            raise CorruptImageError(_damage_reason(im, fmt, e), path=source) from e
        pixels = _to_rgb(_upright(im), fmt, source)
    return DecodedImage(pixels=pixels, format=fmt, source=source)


def _open(data: bytes, source: str) -> ImageFile.ImageFile:
    """Identify and open ``data`` (header only) like ``Image.open``, minus its bomb check.

    Plugins whose signature matches but whose header parsing fails make the file "damaged";
    when no plugin claims the bytes at all, they are "not an image".
    """
    fp = io.BytesIO(data)
    prefix = data[:16]
    damaged: list[str] = []
    unsupported: list[str] = []
    tried: set[str] = set()
    for load_plugins in (Image.preinit, Image.init):
        load_plugins()
        for fmt in list(Image.ID):
            if fmt in tried:
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            claimed = accept(prefix) if accept else False
            if isinstance(claimed, str):  # e.g. "... because AVIF support not installed"
                unsupported.append(claimed)
                continue
            if accept and not claimed:
                continue
            fp.seek(0)
            try:
                return factory(fp, "")
            except (Image.DecompressionBombError, MemoryError):
                raise
            except _NOT_THIS_FORMAT as e:
                if claimed:
                    damaged.append(_damage_reason(None, fmt, e))
            except Exception as e:
                if claimed:  # the signature matched, so this is the file's real format
                    raise CorruptImageError(_damage_reason(None, fmt, e), path=source) from e
    if not damaged and data[4:8] == b"ftyp" and any(b in data[8:64] for b in _HEIF_BRANDS):
        damaged.append("damaged HEIF/AVIF image: its header cannot be read")
    if damaged:
        raise CorruptImageError(damaged[0], path=source)
    if unsupported:
        raise NotAnImageError(f"unsupported image: {unsupported[0]}", path=source)
    raise NotAnImageError(_not_an_image_reason(data), path=source)


def _upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except (MemoryError, Image.DecompressionBombError):
        raise
    except Exception:  # unreadable EXIF: use the pixels as stored, as Pillow's readers do
        return im


def _to_rgb(im: Image.Image, fmt: str, source: str) -> np.ndarray:
    """Convert any Pillow mode to an (H, W, 3) uint8 RGB array."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        gray = _scale_to_uint8(np.asarray(im), float_data=mode == "F")
        return np.repeat(gray[:, :, np.newaxis], 3, axis=2)
    try:
        if mode in _ALPHA_MODES or "transparency" in im.info:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, rgba)
        rgb = im if im.mode == "RGB" else im.convert("RGB")
    except ValueError as e:
        raise NotAnImageError(
            f"unsupported {fmt} image: pixel mode {mode} cannot be converted to RGB ({e})",
            path=source,
        ) from e
    return np.ascontiguousarray(np.array(rgb, dtype=np.uint8))


def _scale_to_uint8(values: np.ndarray, *, float_data: bool) -> np.ndarray:
    """Map 16-bit, 32-bit and float gray values to 0..255 without clipping."""
    if values.dtype.kind == "u" and values.dtype.itemsize == 2:
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    v = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if lo >= 0 and float_data and hi <= 1.0:
        v = v * 255.0
    elif lo >= 0 and float_data and hi <= 255.0:
        pass
    elif lo >= 0 and not float_data and hi <= 65535:
        v = v * (255.0 / 65535.0)
    elif hi > lo:
        v = (v - lo) * (255.0 / (hi - lo))
    else:
        v = np.zeros_like(v)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


# --- messages -------------------------------------------------------------------------


def _plain(e: BaseException) -> str:
    """Pillow's reason for a failure, in plain words."""
    text = str(e).strip() or type(e).__name__
    if isinstance(e, struct.error):
        return "its header is cut short or malformed"
    if isinstance(e, (IndexError, KeyError)):
        return f"its structure is malformed ({type(e).__name__}: {text[:80]})"
    if isinstance(e, ValueError) and re.match(r"invalid literal|could not convert", text):
        return "its header holds a malformed number"
    if m := re.search(r"(?:image file is truncated|truncated File Read)( \(.*\))?", text):
        return f"the file is truncated, it ends before the image data does{m.group(1) or ''}"
    if "broken data stream" in text:
        return "the compressed image data is broken"
    if m := re.search(r"decoder error (-?\d+)", text):
        return f"the decoder rejected the image data (error {m.group(1)})"
    return text[:1].lower() + text[1:160]


def _damage_reason(im: Image.Image | None, fmt: str, e: BaseException) -> str:
    """``damaged <FMT> image: <reason>; <advice>``."""
    reason = _plain(e)
    compression = im.info.get("compression", "raw") if im is not None else "raw"
    if fmt == "TIFF" and compression not in _COMMON_TIFF_CODECS and "decoder" in reason:
        return (
            f"damaged or unsupported TIFF image: {reason}; its compression ({compression}) "
            "may not be supported by this build, try converting it to PNG"
        )
    return f"damaged {fmt} image: {reason}; try a complete copy of the original file"


def _bomb_reason(message: str, max_pixels: int) -> str:
    m = re.search(r"\((\d+) pixels\)", message)
    if m and int(m.group(1)) > max_pixels:
        pixels = int(m.group(1))
        return f"{pixels:,} pixels exceeds the limit of {max_pixels:,} pixels"
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return f"too many pixels for Pillow, which refuses more than {limit:,} ({message})"


def _too_many_bytes(size: int, limit: int) -> str:
    return (
        f"file is {size:,} bytes, over the limit of {limit:,} bytes; "
        "raise the max_file_bytes setting (FACETRACE_MAX_FILE_BYTES) to accept it"
    )


# Signatures of common files that are not images: (offset, magic, what it looks like).
_NON_IMAGE_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF", "a PDF document; export its pages as images first"),
    (0, b"PK\x03\x04", "a ZIP archive; ingest the archive itself or unpack it"),
    (0, b"\x1f\x8b", "a gzip-compressed file"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (0, b"Rar!\x1a\x07", "a RAR archive"),
    (257, b"ustar", "a tar archive"),
    (0, b"\x1aE\xdf\xa3", "a Matroska/WebM video; extract still frames first"),
    (0, b"ID3", "an MP3 audio file"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Microsoft Office (OLE2) document"),
    (0, b"\x7fELF", "a program (ELF executable)"),
)
_RIFF_KINDS = {b"AVI ": "an AVI video; extract still frames first", b"WAVE": "a WAV audio file"}
_HEIF_BRANDS = (b"mif1", b"msf1", b"heic", b"heix", b"avif", b"avis")


def _not_an_image_reason(data: bytes) -> str:
    """Say what ``data`` seems to be, when no image plugin recognised it."""
    kind = _looks_like(data)
    if kind:
        kind, _, advice = kind.partition("; ")
        return f"not an image (looks like {kind})" + (f"; {advice}" if advice else "")
    return "not an image in any format facetrace can decode (unrecognised file header)"


def _looks_like(data: bytes) -> str | None:
    for offset, magic, kind in _NON_IMAGE_MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return kind
    if data[:4] == b"RIFF" and data[8:12] in _RIFF_KINDS:
        return _RIFF_KINDS[data[8:12]]
    if data[4:8] == b"ftyp":  # ISO media: MP4, QuickTime, 3GP (HEIF/AVIF were tried)
        video = "a QuickTime video" if data[8:12] == b"qt  " else "an MP4 video"
        return f"{video}; extract still frames first"
    head = data[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # a multi-byte character cut at 4096 bytes is fine
            return None
        text = head[: e.start].decode("utf-8")
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in lowered[:1024]:
        return "an SVG vector image, which is not supported; convert it to PNG first"
    if lowered.startswith(("<!doctype html", "<html")):
        return "an HTML page"
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    if text and printable / len(text) > 0.95:
        return "a text file"
    return None

"""Coordinate transforms between an image and its copies turned by 90-degree steps.

Convention: ``rotation`` is counter-clockwise degrees as in ``numpy.rot90`` (k = rotation
/ 90), coordinates are continuous pixel coordinates ``(x, y)`` with the origin at the top
left, and ``w, h`` are the width and height of the *original* (unturned) image.
"""

from __future__ import annotations

from collections.abc import Callable

from facetrace.records import Box

ROTATIONS = (0, 90, 180, 270)


def to_rotated(x: float, y: float, w: int, h: int, rotation: int) -> tuple[float, float]:
    """Where the original point ``(x, y)`` lies in the image turned by ``rotation``."""
    if rotation == 0:
        return x, y
    if rotation == 90:
        return y, w - x
    if rotation == 180:
        return w - x, h - y
    if rotation == 270:
        return h - y, x
    raise ValueError(f"rotation must be one of {ROTATIONS}, not {rotation}")


def from_rotated(x: float, y: float, w: int, h: int, rotation: int) -> tuple[float, float]:
    """Where the point ``(x, y)`` of the turned image lies in the original."""
    if rotation == 0:
        return x, y
    if rotation == 90:
        return w - y, x
    if rotation == 180:
        return w - x, h - y
    if rotation == 270:
        return y, h - x
    raise ValueError(f"rotation must be one of {ROTATIONS}, not {rotation}")


def _map_box(
    box: Box, fn: Callable[..., tuple[float, float]], w: int, h: int, rotation: int
) -> Box:
    xa, ya = fn(box.left, box.top, w, h, rotation)
    xb, yb = fn(box.right, box.bottom, w, h, rotation)
    return Box(
        int(round(min(xa, xb))),
        int(round(min(ya, yb))),
        int(round(max(xa, xb))),
        int(round(max(ya, yb))),
    )


def box_to_rotated(box: Box, w: int, h: int, rotation: int) -> Box:
    """The original ``box`` in the coordinates of the turned image."""
    return _map_box(box, to_rotated, w, h, rotation)


def box_from_rotated(box: Box, w: int, h: int, rotation: int) -> Box:
    """A ``box`` of the turned image in original coordinates."""
    return _map_box(box, from_rotated, w, h, rotation)


def scale_box(box: Box, factor: float) -> Box:
    """``box`` with every coordinate multiplied by ``factor``."""
    return Box(
        int(round(box.left * factor)),
        int(round(box.top * factor)),
        int(round(box.right * factor)),
        int(round(box.bottom * factor)),
    )


def clip_box(box: Box, w: int, h: int) -> Box:
    """``box`` clipped to the image; a box wholly outside collapses to zero area."""
    left = min(max(box.left, 0), w)
    top = min(max(box.top, 0), h)
    return Box(left, top, max(min(box.right, w), left), max(min(box.bottom, h), top))

"""Coordinate transforms between an image and its 90-degree turns agree with numpy.rot90."""

from __future__ import annotations

import numpy as np
import pytest

from facetrace.decode import rotate
from facetrace.geometry import box_from_rotated, box_to_rotated, from_rotated, to_rotated
from facetrace.records import Box


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_points_follow_the_pixels(rotation: int) -> None:
    h, w = 7, 11
    img = np.zeros((h, w, 3), np.uint8)
    img[2, 5] = 255  # pixel (x=5, y=2), centre at (5.5, 2.5)
    turned = rotate(img, rotation)
    ys, xs = np.nonzero(turned[:, :, 0])
    x, y = to_rotated(5.5, 2.5, w, h, rotation)
    assert (int(x), int(y)) == (int(xs[0]), int(ys[0]))
    assert from_rotated(x, y, w, h, rotation) == pytest.approx((5.5, 2.5))


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_boxes_round_trip(rotation: int) -> None:
    box = Box(3, 1, 9, 6)
    there = box_to_rotated(box, 11, 7, rotation)
    assert box_from_rotated(there, 11, 7, rotation) == box
    assert there.width * there.height == box.width * box.height

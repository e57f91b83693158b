"""ScaNN's datapoints as the ``scann`` backend tracks them, and its files without some.

facetrace never asks ScaNN to delete (ScaNN 1.4.2 crashes deleting or replacing a face
stored in two leaves). ``Positions`` holds the id of each of ScaNN's datapoints, in
ScaNN's order, and which of them are removed; ``drop_rows`` writes ScaNN's saved files
again without the removed ones, so that they can be read back smaller without training.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from facetrace.index.base import SortedIds, grown, room_for

_COPY_ROWS = 262_144  # rows copied at a time when dead faces are left out


class Positions:
    """The id of each ScaNN datapoint, in ScaNN's order, and which ones are removed.

    facetrace never asks ScaNN to delete (ScaNN 1.4.2 crashes deleting or replacing a
    spilled face): a removed face stays in ScaNN, marked dead here and dropped from every
    result, until ``drop_rows`` leaves it out of ScaNN's files. Lookup by id goes through
    a sorted copy of the ids (``SortedIds``), extended in place (ids usually arrive in
    increasing order) or rebuilt lazily from the live ones; a dead face found there is
    not found.
    """

    def __init__(self, ids: np.ndarray | None = None) -> None:
        self.ids = np.empty(0, np.int64) if ids is None else ids
        self.n = int(self.ids.size)
        self.dead = np.zeros(self.n, bool)
        self.dead_count = 0
        self._sorted = SortedIds()

    @property
    def live_count(self) -> int:
        return self.n - self.dead_count

    def live(self) -> np.ndarray:
        """Whether each datapoint is live, in ScaNN's order."""
        return ~self.dead[: self.n]

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """The position of each live id, or -1."""
        if self._sorted.stale:
            at = np.flatnonzero(self.live())
            self._sorted.reset(self.ids[at], at)
        sid, spos = self._sorted.arrays()
        if sid.size == 0:
            return np.full(ids.size, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(sid, ids), sid.size - 1)
        pos = spos[at]
        return np.where((sid[at] == ids) & ~self.dead[pos], pos, -1)

    def append(self, ids: np.ndarray) -> None:
        need = self.n + ids.size
        if need > self.ids.size or not self.ids.flags.writeable:
            size = room_for(need, self.n)
            self.ids = grown(self.ids.astype(np.int64, copy=False), self.n, size)
            self.dead = grown(self.dead, self.n, size)
        self.ids[self.n : need] = ids
        self.dead[self.n : need] = False
        self._sorted.extend(ids, np.arange(self.n, need, dtype=np.int64))
        self.n = need

    def kill(self, positions: np.ndarray) -> None:
        """Mark the live datapoints at ``positions`` removed (``lookup`` then skips them)."""
        self.dead[positions] = True
        self.dead_count += int(positions.size)


def drop_rows(folder: Path, keep: np.ndarray, into: Path | None = None) -> None:
    """Leave the datapoints not in ``keep`` out of the ScaNN files in ``folder``, in
    place or written ``into`` another folder (with ScaNN's other files copied there).

    Each of ScaNN's ``.npy`` files holds its datapoints in order, one row (or, for the
    leaves of spilled faces, a fixed number of values) each: the stored vectors, the
    codes, the leaves. Every file is checked before any is written; rows are copied a
    block at a time, so memory stays small.
    """
    n, kept = keep.size, int(keep.sum())
    arrays = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".npy"):
            if into is not None:
                shutil.copyfile(folder / name, into / name)
            continue
        rows = np.load(folder / name, mmap_mode="r")
        if rows.ndim == 0 or n == 0 or rows.shape[0] % n:
            raise RuntimeError(f"ScaNN's {name} has shape {rows.shape} for {n} faces")
        arrays[name] = rows
    for name, rows in arrays.items():
        width, rest = rows.shape[0] // n, rows.shape[1:]
        dest = (into or folder) / name
        tmp = dest.with_name(f".{name}.part")
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=rows.dtype, shape=(kept * width, *rest)
        )
        src_rows, out_rows = rows.reshape(n, width, *rest), out.reshape(kept, width, *rest)
        done = 0
        for start in range(0, n, _COPY_ROWS):
            block = src_rows[start : start + _COPY_ROWS][keep[start : start + _COPY_ROWS]]
            out_rows[done : done + block.shape[0]] = block
            done += block.shape[0]
        out.flush()
        del out, out_rows, src_rows
        os.replace(tmp, dest)

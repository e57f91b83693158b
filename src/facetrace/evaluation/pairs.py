"""Reading labelled pair lists: the LFW format and a simple TSV/CSV format.

LFW (``pairs.txt``, ``pairsDevTrain.txt``): an optional header ``FOLDS<TAB>N``, then per
fold N same-person lines ``name<TAB>i<TAB>j`` and N different-person lines
``name1<TAB>i<TAB>name2<TAB>j``; photos are ``IMAGES/name/name_000i.jpg``. Without a header
there is one fold.

TSV/CSV (for example ``deepface/pairs.tsv``): a header with columns ``img_a``, ``img_b``,
``same`` (1/0, true/false, yes/no) and optionally ``fold``; paths are relative to the
file's folder (or to ``--images``). Without a ``fold`` column the pairs are spread over
10 folds by a seeded shuffle.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facetrace.errors import ManifestError


@dataclass(frozen=True)
class Pairs:
    a: list[str]
    b: list[str]
    same: np.ndarray
    folds: np.ndarray

    def __len__(self) -> int:
        return len(self.a)

    def photos(self) -> list[str]:
        return sorted(set(self.a) | set(self.b))


def _lfw_path(images: Path, name: str, number: str) -> str:
    return str(images / name / f"{name}_{int(number):04d}.jpg")


def read_lfw(path: Path, images: Path) -> Pairs:
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    per_fold_pairs = len(lines)
    if lines and len(lines[0]) == 2 and all(x.isdigit() for x in lines[0]):
        folds_n, per_class = int(lines[0][0]), int(lines[0][1])
        lines = lines[1:]
        per_fold_pairs = 2 * per_class
        if len(lines) != folds_n * per_fold_pairs:
            raise ManifestError(
                f"header says {folds_n} folds of {per_fold_pairs} pairs, found {len(lines)} pairs",
                path=path,
            )
    a, b, same, folds = [], [], [], []
    for i, f in enumerate(lines):
        if len(f) == 3:
            a.append(_lfw_path(images, f[0], f[1]))
            b.append(_lfw_path(images, f[0], f[2]))
            same.append(True)
        elif len(f) == 4:
            a.append(_lfw_path(images, f[0], f[1]))
            b.append(_lfw_path(images, f[2], f[3]))
            same.append(False)
        else:
            raise ManifestError(f"line {i + 1} is not an LFW pair", path=path)
        folds.append(i // per_fold_pairs)
    return Pairs(a, b, np.array(same), np.array(folds))


_TRUE = {"1", "true", "yes", "same", "y"}


def read_table(path: Path, images: Path | None) -> Pairs:
    base = images or path.parent
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=delimiter))
    if not rows or not {"img_a", "img_b", "same"} <= set(rows[0]):
        raise ManifestError("needs a header with columns img_a, img_b and same", path=path)
    a = [str(base / r["img_a"]) for r in rows]
    b = [str(base / r["img_b"]) for r in rows]
    same = np.array([r["same"].strip().lower() in _TRUE for r in rows])
    if "fold" in rows[0]:
        folds = np.array([int(r["fold"]) for r in rows])
    else:
        folds = np.random.default_rng(0).permutation(len(rows)) % 10
    return Pairs(a, b, same, folds)


def read_pairs(path: Path, images: Path | None) -> Pairs:
    """Pairs from ``path`` in whichever of the two formats it is in."""
    try:
        head = path.read_text().splitlines()[:1]
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read pairs file ({exc})", path=path) from None
    if head and "img_a" in head[0]:
        return read_table(path, images)
    return read_lfw(path, images or path.parent / "images")

"""Choose the 1:1 "same person" threshold on LFW View 1 (the development split).

Embeds every image of ``pairsDevTrain.txt`` with facetrace's default pipeline (largest face
per image), then prints the accuracy-maximising cosine threshold on DevTrain and the
accuracy it gives on ``pairsDevTest.txt``. View 2 stays untouched for reporting.

    .venv/bin/python benchmarks/threshold_view1.py [--workers 2]
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from facetrace.errors import FacetraceError
from facetrace.pipeline import Analyzer
from facetrace.settings import Settings

LFW = (
    Path(os.environ.get("FACETRACE_FACES", Path(__file__).parents[2] / "shared" / "faces")) / "lfw"
)


def read_pairs(path: Path) -> list[tuple[str, str, bool]]:
    pairs = []
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) == 3:
            pairs.append(
                (f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}/{f[0]}_{int(f[2]):04d}.jpg", True)
            )
        elif len(f) == 4:
            pairs.append(
                (f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}/{f[2]}_{int(f[3]):04d}.jpg", False)
            )
    return pairs


_an: Analyzer | None = None


def embed(rel: str) -> tuple[str, np.ndarray | None]:
    global _an
    if _an is None:
        _an = Analyzer.from_settings(Settings.load(env={}, data_dir="/tmp"))
    try:
        img = _an.analyse_file(LFW / "images" / rel)
    except FacetraceError:
        return rel, None
    if not img.faces:
        return rel, None
    f = max(img.faces, key=lambda f: f.box.width * f.box.height)
    v = f.embedding / np.linalg.norm(f.embedding)
    return rel, v


def scores(pairs: list[tuple[str, str, bool]], vecs: dict[str, np.ndarray | None]):  # type: ignore[no-untyped-def]
    s, y = [], []
    for a, b, same in pairs:
        if vecs.get(a) is None or vecs.get(b) is None:
            continue
        s.append(float(np.dot(vecs[a], vecs[b])))  # type: ignore[arg-type]
        y.append(same)
    return np.array(s), np.array(y)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    train = read_pairs(LFW / "pairsDevTrain.txt")
    test = read_pairs(LFW / "pairsDevTest.txt")
    images = sorted({p for a, b, _ in train + test for p in (a, b)})
    with ProcessPoolExecutor(args.workers) as pool:
        vecs = dict(pool.map(embed, images, chunksize=16))
    missed = sum(v is None for v in vecs.values())
    print(f"{len(images)} images, no face in {missed}")
    s, y = scores(train, vecs)
    grid = np.arange(0.80, 0.99, 0.0025)
    acc = [((s >= t) == y).mean() for t in grid]
    best = float(grid[int(np.argmax(acc))])
    print(f"DevTrain: {len(s)} pairs, best threshold {best:.4f}, accuracy {max(acc):.4f}")
    s2, y2 = scores(test, vecs)
    print(f"DevTest: {len(s2)} pairs, accuracy at {best:.4f}: {((s2 >= best) == y2).mean():.4f}")


if __name__ == "__main__":
    main()

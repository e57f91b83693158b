"""dlib's jitter option against plain and mirrored embeddings, on the first pairs of LFW
View 2 (jitter is about 10x slower per face, so a subset). For each variant: the
accuracy at the best threshold of each half applied to the other half (2-fold), and the
separation of genuine and impostor scores (d' = difference of means / pooled std).

    .venv/bin/python benchmarks/jitter.py [--pairs 300] [--jitters 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from facetrace.evaluation import metrics
from facetrace.evaluation.pairs import read_pairs

LFW = (
    Path(
        os.environ.get("FACETRACE_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces")
    )
    / "lfw"
)
_state: dict[str, object] = {}


def _embed(args: tuple[str, int]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    from facetrace.decode import decode_file
    from facetrace.detect import find_faces
    from facetrace.embed import DlibEmbedder, normalise
    from facetrace.evaluation.embeddings import _central, _nearest_centre
    from facetrace.pipeline import Analyzer
    from facetrace.settings import Settings

    path, jitters = args
    if "an" not in _state:
        _state["an"] = Analyzer.from_settings(Settings.load(env={}, data_dir="/tmp", flip=False))
        _state["jit"] = DlibEmbedder(jitters=jitters)
    an: Analyzer = _state["an"]
    jit: DlibEmbedder = _state["jit"]
    _, img = decode_file(Path(path), max_pixels=an.max_pixels, max_file_bytes=an.max_file_bytes)
    boxes = [d.box for d in find_faces(img.pixels, an.detector, max_side=an.max_side)]
    box = _nearest_centre(boxes, img) if boxes else _central(img)
    chip = an.aligner.align(img.pixels, box).chip
    plain = normalise(an.embedder.embed([chip, np.ascontiguousarray(chip[:, ::-1])]))
    return path, plain[0], normalise(plain[0] + plain[1]), normalise(jit.embed([chip]))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--jitters", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    pairs = read_pairs(LFW / "pairs.txt", LFW / "images")
    idx = np.r_[0 : args.pairs // 2, 300 : 300 + args.pairs // 2]  # fold 1: same, then different
    a = [pairs.a[i] for i in idx]
    b = [pairs.b[i] for i in idx]
    same = pairs.same[idx]
    photos = sorted(set(a) | set(b))
    with ProcessPoolExecutor(args.workers) as pool:
        vecs = {
            p: (x, y, z) for p, x, y, z in pool.map(_embed, [(p, args.jitters) for p in photos])
        }
    halves = np.arange(len(idx)) % 2
    print(f"{len(idx)} pairs of LFW View 2 fold 1, {len(photos)} photos, jitters={args.jitters}")
    for k, name in enumerate(("plain", "flip", f"jitter {args.jitters}")):
        s = np.array([float(vecs[x][k] @ vecs[y][k]) for x, y in zip(a, b, strict=True)])
        acc = metrics.kfold_accuracy(s, same, halves)["mean_accuracy"]
        g, i = s[same], s[~same]
        dprime = (g.mean() - i.mean()) / np.sqrt((g.var() + i.var()) / 2)
        print(f"{name:12} 2-fold accuracy {acc:.4f}   d' {dprime:.3f}")


if __name__ == "__main__":
    main()

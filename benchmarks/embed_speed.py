"""Milliseconds per face of dlib's ResNet and of its ONNX conversion run by onnxruntime, and
how far apart their vectors are, on the face nearest the centre of the first photo of each of
N LFW people (chips cut as the pipeline cuts them). Every row embeds all N chips in batches
of the given size; ``x dlib`` is dlib's ms per face at the same batch size over this row's,
measured in the same run. Distances are cosine distances of each onnxruntime vector to dlib's
for the same chip (dlib at batch 32 as reference), over every onnxruntime row.

    flock /tmp/facetrace-heavy.lock .venv/bin/python benchmarks/embed_speed.py \
        [--faces 500] [--batches 1,8,32] [--threads 1,2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime  # noqa: F401 - before facetrace: loaded after usearch it crashes

from facetrace.decode import decode_file
from facetrace.detect import find_faces
from facetrace.embed import DlibEmbedder
from facetrace.embed_onnx import OnnxDlibEmbedder
from facetrace.pipeline import Analyzer
from facetrace.settings import Settings

LFW = (
    Path(
        os.environ.get("FACETRACE_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces")
    )
    / "lfw"
    / "images"
)


def lfw_chips(n: int) -> list[np.ndarray]:
    """Aligned chips of the most central face in the first photo of the first ``n`` people."""
    an = Analyzer.from_settings(Settings.load(env={}, data_dir="/tmp", flip=False))
    chips: list[np.ndarray] = []
    for person in sorted(LFW.iterdir()):
        _, img = decode_file(
            next(iter(sorted(person.glob("*.jpg")))),
            max_pixels=an.max_pixels,
            max_file_bytes=an.max_file_bytes,
        )
        found = find_faces(img.pixels, an.detector, max_side=an.max_side)
        if not found:
            continue
        cx, cy = img.width / 2, img.height / 2
        box = min(
            (d.box for d in found),
            key=lambda b: ((b.left + b.right) / 2 - cx) ** 2 + ((b.top + b.bottom) / 2 - cy) ** 2,
        )
        chips.append(an.aligner.align(img.pixels, box).chip)
        if len(chips) == n:
            break
    return chips


def timed(
    embed: Callable[[list[np.ndarray]], np.ndarray], chips: list[np.ndarray], batch: int
) -> tuple[float, np.ndarray]:
    """(ms per face, vectors) embedding ``chips`` ``batch`` at a time, after one warm-up call."""
    embed(chips[:batch])
    start = time.perf_counter()
    out = [embed(chips[i : i + batch]) for i in range(0, len(chips), batch)]
    return (time.perf_counter() - start) / len(chips) * 1000, np.concatenate(out)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine distance, in float64 (float32 rounds these to zero)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return 1 - np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=500)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    load_before = os.getloadavg()[0]
    chips = lfw_chips(args.faces)

    rows = []
    dlib_ms, dlib_vecs = {}, {}
    dlib = DlibEmbedder()
    for b in batches:
        dlib_ms[b], dlib_vecs[b] = timed(dlib.embed, chips, b)
        rows.append({"backend": "dlib", "threads": 1, "batch": b, "ms_per_face": dlib_ms[b]})
    ref = dlib_vecs[max(batches)]
    dlib_self = np.concatenate([distance(v, ref) for v in dlib_vecs.values()])
    dist: list[np.ndarray] = []
    for t in threads:
        onnx = OnnxDlibEmbedder(threads=t)
        for b in batches:
            ms, vecs = timed(onnx.embed, chips, b)
            dist.append(distance(vecs, ref))
            rows.append({"backend": "onnxruntime", "threads": t, "batch": b, "ms_per_face": ms})
    for row in rows:
        row["x_dlib"] = dlib_ms[row["batch"]] / row["ms_per_face"]
    d = np.concatenate(dist)
    summary = {
        "faces": len(chips),
        "cosine_distance_max": float(d.max()),
        "cosine_distance_mean": float(d.mean()),
        "dlib_batch_sizes_max_distance": float(dlib_self.max()),
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "cpu": os.cpu_count(),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{len(chips)} LFW faces, {os.cpu_count()} CPUs, 1-min load {load_before:.2f} before")
    print(f"{'backend':12} {'threads':>7} {'batch':>5} {'ms/face':>8} {'x dlib':>7}")
    for r in rows:
        print(
            f"{r['backend']:12} {r['threads']:>7} {r['batch']:>5} "
            f"{r['ms_per_face']:>8.2f} {r['x_dlib']:>7.1f}"
        )
    print(f"cosine distance to dlib over {len(d)} vectors: max {d.max():.2e}, mean {d.mean():.2e}")
    print(f"(dlib against itself across batch sizes: max {dlib_self.max():.2e})")
    print(f"1-min load {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()

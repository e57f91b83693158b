"""Ingest speed against the ``face_recognition`` package, same dlib model, same cores.

facetrace runs twice: with ``FACETRACE_FLIP=0`` (exactly the peer's model; its embeddings
are compared with the peer's) and with its default mirror augmentation (two embeddings
a face).

On the same LFW images (default 1,000, spread over the whole set), in one run:
- ``facetrace ingest`` (the real CLI, a fresh data directory, ``--workers N``), and
- the peer: ``face_recognition.load_image_file`` + ``face_locations`` (HOG, upsample 1)
  + ``face_encodings`` in a ``multiprocessing.Pool`` of N processes,
then prints images/s and faces/s of both, their ratio, and the largest difference
between the two embeddings of each face found by both (matched by box overlap).

    make bench            # or: .venv/bin/python benchmarks/ingest.py --images 1000 --workers 2

Not a test: timings on shared machines are noisy; compare within one run only.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

FACES = Path(
    os.environ.get("FACETRACE_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces")
)


def pick_images(n: int) -> list[Path]:
    every = sorted((FACES / "lfw" / "images").glob("*/*.jpg"))
    if len(every) < n:
        sys.exit(f"need {n} LFW images under {FACES / 'lfw' / 'images'}, found {len(every)}")
    step = len(every) / n
    return [every[int(i * step)] for i in range(n)]


def peer_one(path: str) -> tuple[str, list[tuple[int, int, int, int]], list[np.ndarray], tuple]:
    import face_recognition

    img = face_recognition.load_image_file(path)
    boxes = face_recognition.face_locations(img, number_of_times_to_upsample=1, model="hog")
    return path, boxes, face_recognition.face_encodings(img, boxes), img.shape[:2]


def run_peer(paths: list[Path], workers: int) -> tuple[float, dict[str, list]]:
    start = time.perf_counter()
    with Pool(workers) as pool:
        results = pool.map(peer_one, [str(p) for p in paths], chunksize=8)
    return time.perf_counter() - start, {
        p: [(box, enc, shape) for box, enc in zip(b, e, strict=True)] for p, b, e, shape in results
    }


def run_facetrace(folder: Path, data: Path, workers: int, flip: bool) -> float:
    cmd = [
        sys.executable,
        "-m",
        "facetrace",
        "--data",
        str(data),
        "ingest",
        str(folder),
        "-g",
        "bench",
        "--workers",
        str(workers),
        "--json",
    ]
    env = {**os.environ, "FACETRACE_FLIP": "1" if flip else "0"}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def facetrace_faces(data: Path, folder: Path) -> dict[str, list]:
    con = sqlite3.connect(data / "facetrace.db")
    rows = con.execute(
        "select i.path, f.left, f.top, f.right, f.bottom, f.embedding "
        "from face f join source_image i on i.id = f.image_id"
    ).fetchall()
    con.close()
    out: dict[str, list] = {}
    for path, left, top, right, bottom, emb in rows:
        real = str(Path(path).resolve())
        out.setdefault(real, []).append(
            ((left, top, right, bottom), np.frombuffer(emb, np.float32))
        )
    return out


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    paths = pick_images(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        for p in paths:
            (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
            (folder / p.parent.name / p.name).symlink_to(p)
        ft_seconds = run_facetrace(folder, Path(tmp) / "data", args.workers, flip=False)
        ours = facetrace_faces(Path(tmp) / "data", folder)
        flip_seconds = run_facetrace(folder, Path(tmp) / "flip", args.workers, flip=True)
    peer_seconds, peer = run_peer(paths, args.workers)

    ours_n = sum(len(v) for v in ours.values())
    peer_n = sum(len(v) for v in peer.values())
    diffs: dict[bool, list[float]] = {True: [], False: []}
    cos_d: dict[bool, list[float]] = {True: [], False: []}
    matched = 0
    for path, peer_faces in peer.items():
        for (top, right, bottom, left), enc, (h, w) in peer_faces:
            # face_recognition trims boxes that cross the border before predicting landmarks;
            # facetrace predicts them from the detector's own box (see pipeline.py).
            border = top <= 0 or left <= 0 or bottom >= h - 1 or right >= w - 1
            box = (left, top, right + 1, bottom + 1)
            best = max(
                ours.get(str(Path(path).resolve()), []), key=lambda f: iou(f[0], box), default=None
            )
            if best is None or iou(best[0], box) < 0.5:
                continue
            matched += 1
            diffs[border].append(float(np.abs(best[1] - enc).max()))
            a, b = best[1], np.asarray(enc, np.float32)
            cos_d[border].append(1 - float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    n = len(paths)
    print(f"{n} LFW images, {args.workers} worker process(es) each, same machine, one run")
    print(f"{'':24}{'seconds':>9}{'images/s':>10}{'faces/s':>9}{'faces':>7}")
    for name, secs, faces in (
        ("facetrace ingest", ft_seconds, ours_n),
        ("facetrace ingest (flip)", flip_seconds, ours_n),
        ("face_recognition 1.3.0", peer_seconds, peer_n),
    ):
        print(f"{name:24}{secs:9.1f}{n / secs:10.2f}{faces / secs:9.2f}{faces:7d}")
    print(f"speed ratio facetrace / face_recognition (images/s): {peer_seconds / ft_seconds:.2f}")
    ratio = peer_seconds / flip_seconds
    print(f"with mirror augmentation (the default, 2 embeddings a face): {ratio:.2f}")
    print("embeddings below: facetrace with FACETRACE_FLIP=0, the same model as the peer")
    print(f"faces found by both: {matched}")
    for border, label in ((False, "inside the image"), (True, "box crossing the border")):
        worst = max(diffs[border], default=float("nan"))
        worst_cos = max(cos_d[border], default=float("nan"))
        print(
            f"  {len(diffs[border]):5d} faces {label}: largest abs difference between the two "
            f"embeddings {worst:.2e}, largest cosine distance {worst_cos:.2e}"
        )
    print("facetrace times include the CLI's start-up, model loading, hashing and database writes.")


if __name__ == "__main__":
    main()

"""Are the synthetic galleries as hard for an ANN index as real faces? Real LFW against synthetic.

``benchmarks/index.py`` measures indexes on synthetic galleries (``facetrace.evaluation.
synthetic``, mode ``dlib``). Its figures mean something only if those vectors are as hard
to search as real dlib embeddings: not easier (the targets would be met on paper only),
not harder (they would be missed for nothing). This compares both at the one size where
real vectors exist, all of LFW (``FACETRACE_FACES/lfw``, plain dlib vectors of every
photo with a face), against a synthetic gallery with the same number of faces per person:

- neighbourhood shape: mean cosine of the 1st, 10th and 100th neighbour and of the whole
  gallery; relative contrast (mean distance / 10th-neighbour distance) and local
  intrinsic dimensionality (maximum-likelihood, 100 neighbours), medians over probes;
- recall@10 against exact search of FAISS IVF (flat lists) by the share of the gallery
  scanned, and of FAISS HNSW by ``efSearch``.

Probes: 500 photos of people with two or more photos, left out of their gallery.

    .venv/bin/python benchmarks/ann_difficulty.py [--data .eval-data] [--workers 2]
    .venv/bin/python benchmarks/ann_difficulty.py --cache .eval-data/eval-cache/faces-*.npz

Embeddings are cached in the data directory (as ``benchmarks/accuracy.py``); embedding all
of LFW the first time takes over half an hour on 2 cores. ``--cache`` reads the vectors of
an evaluation cache that ``facetrace eval`` already wrote, with whatever settings it had.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import faiss
import numpy as np

from facetrace.evaluation import synthetic
from facetrace.evaluation.embeddings import embed_photos
from facetrace.evaluation.run import photos_in
from facetrace.settings import Settings

FACES = Path(
    os.environ.get("FACETRACE_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces")
)
K = 10
PROBES = 500
SHARES = (32, 16, 8, 4)  # IVF scans 1 / share of the lists
EF = (16, 32, 64, 128)


def real_vectors(data: Path, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit plain vectors, person index) of every LFW photo with a face."""
    photos = photos_in(FACES / "lfw" / "images")
    faces = embed_photos(photos, Settings.load(env={}, data_dir=data), workers=workers)
    ok = np.array([f != "error" for f in faces.found_by])
    people = np.array([Path(p).parent.name for p in faces.paths])[ok]
    return unit(faces.plain[ok]), np.unique(people, return_inverse=True)[1]


def cached_vectors(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """The same from an evaluation cache file (person = the photo's parent folder)."""
    with np.load(cache, allow_pickle=False) as f:
        ok = f["found_by"] != "error"
        paths = [str(k).split("\0")[0] for k in f["keys"][ok]]
        plain = f["plain"][ok]
    people = np.array([Path(p).parent.name for p in paths])
    return unit(plain), np.unique(people, return_inverse=True)[1]


def synthetic_like(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic gallery with the same number of faces per person as ``labels``."""
    stats = synthetic.load_stats()
    counts = np.random.default_rng(seed).permutation(np.bincount(labels)).astype(np.int64)
    plan = synthetic.Plan(counts, seed, "dlib", stats)
    out = np.empty((plan.n_faces, stats.dim), np.float32)
    synthetic.fill(plan, out)
    return out, plan.labels()


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b[:K])) / K for a, b in zip(found, truth, strict=True)]))


def study(vectors: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, object]:
    """Neighbourhood figures and ANN recall curves, probes left out of the gallery."""
    rng = np.random.default_rng(seed)
    several = np.flatnonzero(np.bincount(labels)[labels] >= 2)
    probe_rows = rng.choice(several, PROBES, replace=False)
    keep = np.ones(len(vectors), bool)
    keep[probe_rows] = False
    gallery, probes = np.ascontiguousarray(vectors[keep]), vectors[probe_rows]
    sims, truth = faiss.knn(probes, gallery, 100, faiss.METRIC_INNER_PRODUCT)
    mean_sim = probes @ gallery.mean(axis=0)
    dist = np.sqrt(np.maximum(2 - 2 * sims, 1e-12))
    lid = -1 / np.mean(np.log(dist[:, :99] / dist[:, 99:]), axis=1)
    out: dict[str, object] = {
        "gallery": len(gallery),
        "cos_1st": float(sims[:, 0].mean()),
        "cos_10th": float(sims[:, 9].mean()),
        "cos_100th": float(sims[:, 99].mean()),
        "cos_mean": float(mean_sim.mean()),
        "relative_contrast": float(np.median((1 - mean_sim) / (1 - sims[:, 9]))),
        "lid": float(np.median(lid)),
    }
    for nlist in (32, 128):
        quantizer = faiss.IndexFlatIP(gallery.shape[1])
        ivf = faiss.IndexIVFFlat(quantizer, gallery.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = seed
        ivf.train(gallery)
        ivf.add(gallery)
        for share in SHARES:
            ivf.nprobe = max(1, nlist // share)
            out[f"ivf{nlist}_1/{share}"] = recall(ivf.search(probes, K)[1], truth)
    hnsw = faiss.IndexHNSWFlat(gallery.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(gallery)
    for ef in EF:
        hnsw.hnsw.efSearch = ef
        out[f"hnsw_ef{ef}"] = recall(hnsw.search(probes, K)[1], truth)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(".eval-data"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, help="an evaluation cache (faces-*.npz) to read")
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(min(2, os.cpu_count() or 1))
    if args.cache is not None:
        real, labels = cached_vectors(args.cache)
    elif (FACES / "lfw" / "images").is_dir():
        real, labels = real_vectors(args.data, args.workers)
    else:
        print(f"skipped: no LFW photos under {FACES / 'lfw' / 'images'} (set FACETRACE_FACES)")
        return 0
    fake, fake_labels = synthetic_like(labels, args.seed + 7)
    rows = {
        "real LFW (dlib, plain)": study(real, labels, args.seed),
        "synthetic (mode dlib)": study(fake, fake_labels, args.seed),
    }
    keys = list(next(iter(rows.values())))
    print("| figure | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in keys:
        cells = [
            f"{v:,}" if isinstance(v, int) else f"{v:.3f}" for v in (r[key] for r in rows.values())
        ]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

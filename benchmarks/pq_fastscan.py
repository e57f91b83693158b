"""Compare FAISS list codes for the 10M latency target: speed of the scan against recall.

Not a facetrace backend: a measuring tool for choosing one. For each code (any FAISS
factory code: ``PQ128x4fs`` as ``ivf-pq`` uses, residual ``PQ64x4fsr``, ``RaBitQfs``,
``RaBitQ4``, ``SQ8``, ``Flat`` ...) it builds ``IVF{nlist},{code}`` on a gallery that
``benchmarks/index.py --keep-data`` saved, and for each ``nprobe`` and number of
candidates prints the single-query p50 of the scan on one thread and the coverage@10:
the share of the exact top 10 (``truth.npy``) among the candidates. A re-ranking of the
candidates on the stored vectors, as ``ivf-pq`` does, turns coverage into recall@10 and
costs about 0.2 ms for 640 candidates.

The coarse k-means is trained once per ``nlist`` (``--niter`` iterations, 64 points a
list) and cached beside the data, so codes are compared on the same lists::

    python benchmarks/index.py --sizes 1000000 --keep-data --workdir /tmp/ftb
    python benchmarks/pq_fastscan.py /tmp/ftb/n1000000-dlib-seed20261128 \\
        --codes PQ128x4fs,PQ64x4fsr,PQ32x4fsr --nprobe 256,512 --candidates 640,2560,10000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np

K = 10
_POINTS_PER_LIST = 64


def coverage(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact top ``K`` among the ``found`` candidates."""
    return len(set(found.tolist()) & set(truth[:K].tolist())) / K


def centroids(data: Path, vectors: np.ndarray, nlist: int, niter: int) -> np.ndarray:
    """The coarse k-means centroids for ``nlist`` lists (cached in ``data``)."""
    cache = data / f"centroids-{nlist}-{niter}.npy"
    if cache.is_file():
        return np.load(cache)
    n = len(vectors)
    rows = np.random.default_rng(1).choice(n, min(n, _POINTS_PER_LIST * nlist), replace=False)
    kmeans = faiss.Kmeans(vectors.shape[1], nlist, niter=niter, seed=1)
    started = time.perf_counter()
    kmeans.train(np.ascontiguousarray(vectors[np.sort(rows)], np.float32))
    print(f"k-means, {nlist} lists: {time.perf_counter() - started:.0f} s", flush=True)
    np.save(cache, kmeans.centroids)
    return np.asarray(kmeans.centroids)


def build(code: str, vectors: np.ndarray, lists: np.ndarray) -> tuple[faiss.Index, faiss.Index]:
    """(index, its coarse quantizer) for ``IVF{nlist},{code}`` on the given lists."""
    dim, nlist = vectors.shape[1], len(lists)
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(lists)
    index = faiss.index_factory(dim, f"IVF{nlist},{code}", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.quantizer = quantizer  # trained already: only the codes are trained below
    rows = np.random.default_rng(2).choice(len(vectors), min(len(vectors), 200_000), False)
    index.train(np.ascontiguousarray(vectors[np.sort(rows)], np.float32))
    for start in range(0, len(vectors), 500_000):
        index.add(np.ascontiguousarray(vectors[start : start + 500_000], np.float32))
    return index, quantizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder index.py wrote with --keep-data")
    parser.add_argument(
        "--codes", default="PQ128x4fs,PQ64x4fsr", help="FAISS codes, comma-separated"
    )
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--niter", type=int, default=25, help="k-means iterations")
    parser.add_argument("--nprobe", default="256,512")
    parser.add_argument("--candidates", default="640,2560,10000")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)
    vectors = np.load(args.data / "vectors.npy", mmap_mode="r")
    queries = np.load(args.data / "queries.npy").astype(np.float32)[: args.queries]
    truth = np.load(args.data / "truth.npy")[: args.queries]
    print(f"{len(vectors):,} vectors, {len(queries)} queries, nlist {args.nlist}")
    faiss.omp_set_num_threads(2)
    lists = centroids(args.data, vectors, args.nlist, args.niter)
    for code in args.codes.split(","):
        faiss.omp_set_num_threads(2)
        started = time.perf_counter()
        index, quantizer = build(code, vectors, lists)
        size = faiss.serialize_index(index).nbytes / len(vectors)
        print(
            f"IVF{args.nlist},{code}: built in {time.perf_counter() - started:.0f} s, "
            f"{size:.0f} bytes a face with ids",
            flush=True,
        )
        faiss.omp_set_num_threads(1)
        for nprobe in (int(x) for x in args.nprobe.split(",")):
            faiss.extract_index_ivf(index).nprobe = nprobe
            for wanted in (int(x) for x in args.candidates.split(",")):
                times, cover = [], []
                for query, exact in zip(queries, truth, strict=True):
                    t = time.perf_counter()
                    found = index.search(query[None, :], wanted)[1][0]
                    times.append(time.perf_counter() - t)
                    cover.append(coverage(found, exact))
                print(
                    f"  nprobe {nprobe:5d}  candidates {wanted:6d}  "
                    f"p50 {np.median(times) * 1e3:6.2f} ms  coverage@10 {np.mean(cover):.4f}",
                    flush=True,
                )
        del index, quantizer
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

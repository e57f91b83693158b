"""Probe FAISS PQ fast-scan with exact re-ranking on a gallery ``benchmarks/index.py`` kept.

A lead for the 10M latency target, not a facetrace backend yet: it builds
``IVF{nlist},PQ{m}x4fs,RFlat`` (4-bit product codes scanned with SIMD, then the ``k_factor *
10`` best re-ranked on the float32 vectors) and prints single-query p50 on one thread and
recall@10 against the exact top 10 that ``index.py --keep-data`` saved in ``truth.npy``::

    python benchmarks/index.py --sizes 1000000 --keep-data --workdir /tmp/ftb
    python benchmarks/pq_fastscan.py /tmp/ftb/n1000000-dlib-seed20261128 --m 64,128
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np

K = 10


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    """Mean share of the exact top ``K`` that the index returned."""
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder index.py wrote with --keep-data")
    parser.add_argument("--m", default="64,128", help="sub-quantizers to try, comma-separated")
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--nprobe", default="256,512,1024")
    parser.add_argument("--k-factor", default="64,256,1000")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)
    vectors = np.ascontiguousarray(np.load(args.data / "vectors.npy", mmap_mode="r"), np.float32)
    queries = np.load(args.data / "queries.npy").astype(np.float32)[: args.queries]
    truth = np.load(args.data / "truth.npy")[: args.queries]
    print(f"{len(vectors):,} vectors, {len(queries)} queries, nlist {args.nlist}")
    for m in (int(x) for x in args.m.split(",")):
        spec = f"IVF{args.nlist},PQ{m}x4fs,RFlat"
        faiss.omp_set_num_threads(2)
        started = time.perf_counter()
        index = faiss.index_factory(vectors.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[: max(200_000, 50 * args.nlist)])
        index.add(vectors)
        print(f"{spec}: built in {time.perf_counter() - started:.0f} s", flush=True)
        faiss.omp_set_num_threads(1)
        ivf = faiss.extract_index_ivf(index)
        for nprobe in (int(x) for x in args.nprobe.split(",")):
            for k_factor in (int(x) for x in args.k_factor.split(",")):
                ivf.nprobe, index.k_factor = nprobe, k_factor
                times, found = [], []
                for query in queries:
                    t = time.perf_counter()
                    found.append(index.search(query[None, :], K)[1][0])
                    times.append(time.perf_counter() - t)
                print(
                    f"  nprobe {nprobe:5d}  k_factor {k_factor:5d}  "
                    f"p50 {np.median(times) * 1e3:6.2f} ms  recall@10 {recall(found, truth):.4f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

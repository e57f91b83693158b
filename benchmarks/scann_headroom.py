"""Where the 10M latency of the ``scann`` backend goes, and what does not buy headroom.

Not a benchmark of a target (``benchmarks/index.py`` is): the measurements behind
"Latency headroom at 10M" in ``docs/scale.md``, on a gallery that ``benchmarks/index.py
--keep-data`` saved (``vectors.npy``, ``queries.npy``, ``truth.npy``). One thread::

    # a 10M index built as facetrace reindex builds it (told its size, 20,000 a batch)
    python benchmarks/scann_headroom.py build DATA /tmp/idx10m/index
    # p50 from ScaNN and through facetrace, recall@10 on all queries; run it with and
    # without GLIBC_TUNABLES=glibc.malloc.hugetlb=1 to compare huge pages
    python benchmarks/scann_headroom.py latency DATA /tmp/idx10m/index --nprobe 1,576,576,640
    # more candidates re-ranked (facetrace's k_factor times 10)
    python benchmarks/scann_headroom.py latency DATA /tmp/idx10m/index --pre 400,800,1600
    # the same index with its leaf centres quantised to int8 at query time
    python benchmarks/scann_headroom.py latency DATA /tmp/idx10m/index --int8-centres
    # twice the leaves (ScaNN built directly on the first --faces of the gallery)
    python benchmarks/scann_headroom.py leaves DATA --leaves 4096,8192 --probe 224,256,384
    # the 4-bit scan alone, codes in cache and not
    python benchmarks/scann_headroom.py scan DATA --sizes 20000,100000,1000000
    # faces as they are, against their coordinates in the subspace they fill (turned, as
    # facetrace stores them, and not turned: the eigenvector basis)
    python benchmarks/scann_headroom.py subspace DATA --probe 192,224,256,288,320
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

from facetrace.index import create_index, index_files, open_index
from index import recall  # benchmarks/index.py: share of the exact top 10 found

K, PRE = 10, 400  # results, and candidates re-ranked (facetrace's default)
_BATCH = 20_000  # a rebuild's database batch


def timed(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """Results (a row a query), p50 and p99 in ms of one query at a time (after 10
    unmeasured)."""
    for q in queries[:10]:
        search(q)
    found, lat = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(search(q))
        lat.append(time.perf_counter() - t)
    return np.asarray(found), float(np.median(lat) * 1e3), float(np.percentile(lat, 99) * 1e3)


def build(args: argparse.Namespace) -> None:
    vectors = np.load(args.data / "vectors.npy", mmap_mode="r")[: args.faces]
    n = vectors.shape[0]
    index = create_index("scann", vectors.shape[1], expect=n)
    t = time.perf_counter()
    for start in range(0, n, _BATCH):
        stop = min(n, start + _BATCH)
        index.add(np.arange(start, stop), np.asarray(vectors[start:stop]))
    print(
        f"built {n:,} in {time.perf_counter() - t:.0f} s: {index.leaves} leaves, "
        f"nprobe {index.nprobe}"
    )
    args.index.parent.mkdir(parents=True, exist_ok=True)
    index.save(args.index)


def latency(args: argparse.Namespace) -> None:
    before = psutil.Process().memory_info().rss
    t = time.perf_counter()
    index = open_index("scann", args.index, 128, verify=False)
    opened = time.perf_counter() - t
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    held = psutil.Process().memory_info().rss - before
    huge = re.findall(r"AnonHugePages:\s+(\d+) kB", Path("/proc/self/smaps_rollup").read_text())
    print(
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES')}: open {opened:.1f} s, "
        f"{held / (len(index) * 512):.3f}x raw, "
        f"{int(huge[0]) >> 10 if huge else 0} MB in huge pages"
    )
    native = index._native
    if args.int8_centres:
        native = int8_centres(args.index)
    native.set_num_threads(1)
    queries, truth = np.load(args.data / "queries.npy"), np.load(args.data / "truth.npy")
    stored = queries if index.subspace is None else index.subspace.project(queries)
    print(f"ScaNN stores {index.subspace.dims if index.subspace else 128} dimensions a face")
    ids = index.positions.ids
    for pre, nprobe in itertools.product(args.pre, args.nprobe):
        found, p50, p99 = timed(
            lambda q, b=nprobe, p=pre: ids[np.asarray(native.search(q, K, p, b)[0])], stored
        )
        line = (
            f"{pre} re-ranked, nprobe {nprobe}: ScaNN p50 {p50:.3f} ms, p99 {p99:.3f}; "
            f"recall@10 {recall(found, truth, K):.4f}"
        )
        if not args.int8_centres:
            index.nprobe, index.k_factor = nprobe, pre // K
            _, wrapped, _ = timed(lambda q: index.search(q[None], K)[0][0], queries)
            line += f"; through facetrace p50 {wrapped:.3f} ms"
        print(line, flush=True)


def int8_centres(path: Path):
    """The saved index read again with ``query_tokenization_type: FIXED_POINT_INT8``."""
    from scann.proto import partitioning_pb2, scann_pb2

    from facetrace.index.scann_index import _load

    folder = Path(tempfile.mkdtemp(prefix="scann-int8-"))
    for f in index_files(path):
        if ".scann." in f.name:
            (folder / f.name.split(".scann.", 1)[1]).symlink_to(f.resolve())
    config = scann_pb2.ScannConfig()
    config.ParseFromString((folder / "scann_config.pb").read_bytes())
    config.partitioning.query_tokenization_type = (
        partitioning_pb2.PartitioningConfig.FIXED_POINT_INT8
    )
    (folder / "scann_config.pb").unlink()
    (folder / "scann_config.pb").write_bytes(config.SerializeToString())
    try:
        return _load(folder)
    finally:
        shutil.rmtree(folder)


def leaves(args: argparse.Namespace) -> None:
    vectors = np.asarray(np.load(args.data / "vectors.npy", mmap_mode="r")[: args.faces])
    queries = np.load(args.data / "queries.npy")
    truth = exact_truth(vectors, queries)
    for n_leaves in args.leaves:
        sweep(f"{n_leaves} leaves", vectors, queries, truth, n_leaves, args.probe)


def subspace(args: argparse.Namespace) -> None:
    from facetrace.index.subspace import Subspace

    vectors = np.ascontiguousarray(np.load(args.data / "vectors.npy", mmap_mode="r")[: args.faces])
    queries = np.load(args.data / "queries.npy")
    truth = exact_truth(vectors, queries)
    fitted = Subspace.fit(vectors)
    assert fitted is not None, "these vectors fill every dimension"
    sample = vectors[:: max(1, vectors.shape[0] // 65_536)].astype(np.float64)
    eigvecs = np.linalg.eigh(sample.T @ sample)[1][:, ::-1][:, : fitted.dims]
    for name, basis in (
        ("as they are", None),
        (f"{fitted.dims} dimensions, eigenvector basis", eigvecs.astype(np.float32)),
        (f"{fitted.dims} dimensions, turned (facetrace's)", fitted.basis),
    ):
        stored = vectors if basis is None else np.ascontiguousarray(vectors @ basis)
        asked = queries if basis is None else np.ascontiguousarray(queries @ basis)
        sweep(name, stored, asked, truth, args.leaves, args.probe)


def sweep(
    name: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    n_leaves: int,
    probes: list[int],
) -> None:
    """ScaNN built directly as facetrace configures it (leaves, spill, codes), then p50
    and recall@10 searching each of ``probes`` leaves."""
    import scann

    t = time.perf_counter()
    searcher = (
        scann.scann_ops_pybind.builder(vectors, K, "dot_product")
        .tree(
            num_leaves=n_leaves,
            num_leaves_to_search=probes[0],
            spherical=True,
            training_sample_size=64 * n_leaves,
            soar_lambda=1.0,
            overretrieve_factor=2.0,
        )
        .score_ah(2, anisotropic_quantization_threshold=0.2)
        .reorder(PRE)
        .set_n_training_threads(os.cpu_count() or 1)
        .build()
    )
    searcher.set_num_threads(1)
    print(f"{name}: built in {time.perf_counter() - t:.0f} s", flush=True)
    for probe in probes:
        found, p50, _ = timed(
            lambda q, b=probe: searcher.search(
                q, final_num_neighbors=K, leaves_to_search=b, pre_reorder_num_neighbors=PRE
            )[0],
            queries,
        )
        got = recall(found, truth, K)
        print(f"  {probe} of {n_leaves}: p50 {p50:.3f} ms, recall@10 {got:.4f}", flush=True)


def exact_truth(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return flat.search(queries, K)[1]


def scan(args: argparse.Namespace) -> None:
    import scann

    vectors = np.load(args.data / "vectors.npy", mmap_mode="r")
    queries = np.load(args.data / "queries.npy")[:300]
    for n in args.sizes:
        searcher = (
            scann.scann_ops_pybind.builder(np.asarray(vectors[:n]), K, "dot_product")
            .score_ah(2, anisotropic_quantization_threshold=0.2)
            .reorder(K)
            .set_n_training_threads(os.cpu_count() or 1)
            .build()
        )
        searcher.set_num_threads(1)
        _, p50, _ = timed(
            lambda q, s=searcher: s.search(q, final_num_neighbors=K, pre_reorder_num_neighbors=K)[
                0
            ],
            queries,
        )
        print(f"{n:,} faces: p50 {p50:.3f} ms, {p50 * 1e6 / n:.2f} ns a face", flush=True)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {"build": build, "latency": latency, "leaves": leaves, "scan": scan}
    for name, fn in {**commands, "subspace": subspace}.items():
        p = sub.add_parser(name)
        p.add_argument("data", type=Path, help="a folder benchmarks/index.py --keep-data saved")
        if name in ("build", "latency"):
            p.add_argument("index", type=Path, help="the saved index (its manifest)")
        p.set_defaults(fn=fn)
        if name == "latency":
            p.add_argument("--nprobe", type=ints, default=[1, 576, 576, 640])
            p.add_argument("--pre", type=ints, default=[PRE], help="candidates re-ranked")
            p.add_argument("--int8-centres", action="store_true")
        if name in ("build", "leaves", "subspace"):
            p.add_argument("--faces", type=int, default=None if name == "build" else 1_000_000)
        if name == "leaves":
            p.add_argument("--leaves", type=ints, default=[4096, 8192])
        if name == "subspace":
            p.add_argument("--leaves", type=int, default=4096)
        if name in ("leaves", "subspace"):
            p.add_argument("--probe", type=ints, default=[224, 256, 320, 384])
        if name == "scan":
            p.add_argument("--sizes", type=ints, default=[20_000, 100_000, 1_000_000])
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()

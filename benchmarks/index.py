"""Vector indexes at a million and ten million faces: speed, memory and recall, in one run.

Not a test: run it by hand on a quiet machine, under the heavy-run lock, and keep what
it prints::

    flock /tmp/facetrace-heavy.lock .venv/bin/python benchmarks/index.py \\
        --sizes 1000000,10000000 --markdown benchmarks/out/index_10m.md \\
        2> benchmarks/out/index_10m.log

Data. ``facetrace.evaluation.synthetic`` draws the gallery (``--mode dlib``: statistics
fitted on real dlib vectors of LFW; ``--mode uniform``: uniform on the sphere, the worst
case for ANN), 1 to 7 faces per identity, seeded. It is written once per size into a
memory-mapped ``.npy`` in ``--workdir`` and shared by every measuring process. Queries
are new photos of gallery identities. Ids are gallery rows.

Measures. Every backend runs in fresh processes (multiprocessing spawn), so memory is
its own:

1. *build* (all cores): adds the gallery in batches of a million (build time, rate),
   then measures RSS (less the RSS before building: ``index GB``), peak RSS, saves the
   index (file size), adds 5 batches of 10,000 new faces (incremental add rate) and
   removes one identity's faces, checking the very next search no longer returns them.
2. *search* (one thread: ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` = 1 in its
   environment, ``faiss.omp_set_num_threads(1)``, usearch ``threads=1``): opens the saved
   index memory-mapped (open time, RSS after opening and after the queries), then times
   single queries after 10 warm-up ones (p50/p99; 1,000 queries, 200 for the slow exact
   ones), and the recall/latency curve over the ANN's search breadth (on the same
   queries, or the first ``--sweep-queries``: the target's recall needs them all, as
   the 0.99 line moved by one breadth step between samples of 200).
3. *batch* (all cores): opens it again and searches all queries in one call
   (queries/s); recall@1 and recall@10 are measured on these results against FAISS
   ``IndexFlatIP``'s batch results (the ground truth), and the *mate hit rate* (a face of
   the probe's own identity in the top 10).

Backends (``--backends``; the default is ``flat,scann,ivf-pq,ivf-sq8,usearch,milvus``):
``flat`` (FAISS IndexFlatIP, exact, the reference peer, always run), ``ivf`` (facetrace's
FAISS inverted-list backend, codec flat, and ``ivf-fp16`` / ``ivf-sq8``), ``ivf-pq``
(facetrace's lists of 4-bit product codes re-ranked on float32 vectors, and
``ivf-pq-fp16`` re-ranked on float16), ``scann`` (facetrace's ScaNN backend: leaves of
4-bit anisotropic codes re-ranked on float32, each face in two leaves; ``--ivf-nlist
auto`` gives it its own rule, ``facetrace.index.scann_index.auto_nlist``, 16,384 leaves
at 10M; ``scann-nospill``: each face in one leaf), ``usearch``
(facetrace's HNSW backend, f32, and ``usearch-f16`` / ``usearch-i8``), ``faiss-hnsw``
(raw FAISS IndexHNSWFlat M=16, efConstruction 128) and ``milvus`` (facetrace's Milvus
backend on Milvus Lite, FLAT). The graph indexes and Milvus are too slow to build or
query at ten million here; above a million they are reported as not run, with the rates
measured at a million and the time extrapolated from them (``--force-slow`` runs them
anyway). Each usearch build takes some 13 minutes at a million (one thread), so its
compressed variants are left out of the default and measured in a run of their own.

ivf lists. ``--ivf-nlist auto`` passes the backend's own rule (``4 sqrt(n)``, a power of
two, at most 4,096, as ``facetrace.index.faiss_ivf.auto_nlist``) up front, so that the batch
adds never retrain; ``--ivf-max-nlist`` lowers that cap. Measured here, more lists did not
lower the share of the gallery a query must scan for recall@10 0.99 (about 1/8 from 1,024
to 16,384 lists), while the flat coarse quantizer's training and adding cost grows with
``n * nlist * 128``. ``--resume`` keeps the variants an interrupted run already measured.
``--ivf-nlist backend`` lets the index grow and retrain as an ingest would; ``--ivf-nlist
expect`` tells it the final size instead, as ``facetrace reindex`` does (the backend's own
rule, trained once on its first full sample). ``--build-batch 20000`` adds the gallery in
the batches a rebuild reads from the database (default: a million).

faiss-cpu's wheel bundles OpenBLAS 0.3.15, which takes this machine's AVX-512 Xeon for a
"Prescott" and multiplies matrices at a third of the speed (25 vs 65 GFLOPS: k-means
training, IVF adds, exact batch search). ``--openblas-coretype auto`` (the default) sets
``OPENBLAS_CORETYPE=SkylakeX`` for the measuring processes when the CPU has AVX-512 and
the variable is unset; ``none`` leaves it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DIM = 128
K = 10
ADD_BATCH, ADD_BATCHES = 10_000, 5
BUILD_BATCH = 1_000_000
WARMUP = 10
SLOW_ABOVE = 1_000_000  # graph indexes and Milvus run up to this size by default
ROW_BYTES = DIM * 4
GB = 1e9
TERMINATED = "process died (SIGTERM)"
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class Variant:
    """One backend configuration to measure."""

    name: str  # on the command line
    label: str  # in the tables
    kind: str  # "faiss-flat", "faiss-hnsw" or "facetrace"
    backend: str = ""  # facetrace backend name
    options: dict[str, Any] = field(default_factory=dict)
    breadth: str = ""  # the search-breadth parameter swept, if any
    sweep: tuple[int, ...] = ()
    family: str = ""  # compression table group
    codec: str = ""
    slow: str = ""  # why it runs only up to SLOW_ABOVE by default


IVF_SWEEP = (8, 16, 32, 64, 128, 256)
SCANN_SWEEP = (128, 192, 256, 320, 384, 512, 576, 640, 768, 1024, 1449)  # of 4,096 or 16,384
HNSW_SWEEP = (16, 32, 64, 128, 256, 512)
USEARCH_SLOW = "usearch HNSW adds on one thread (facetrace's default, for correctness)"
VARIANTS = {
    v.name: v
    for v in [
        Variant("flat", "FAISS IndexFlatIP (exact)", "faiss-flat", family="exact", codec="f32"),
        *(
            Variant(
                f"ivf{suffix}",
                f"facetrace ivf {codec}",
                "facetrace",
                "ivf",
                {"codec": codec},
                "nprobe",
                IVF_SWEEP,
                "ivf",
                codec,
            )
            for suffix, codec in (("", "flat"), ("-fp16", "fp16"), ("-sq8", "sq8"))
        ),
        *(
            Variant(
                f"ivf-pq{suffix}",
                f"facetrace ivf-pq (PQ{DIM}x4fs, re-ranked on {refine})",
                "facetrace",
                "ivf-pq",
                {"refine": refine},
                "nprobe",
                IVF_SWEEP,
                "ivf-pq",
                f"pq-{refine}",
            )
            for suffix, refine in (("", "f32"), ("-fp16", "fp16"))
        ),
        *(
            Variant(
                f"scann{suffix}",
                f"facetrace scann{label} (AH 2 dims x 4 bits a block, in the faces' subspace; "
                "re-ranked on f32)",
                "facetrace",
                "scann",
                {"spill": spill},
                "nprobe",
                SCANN_SWEEP,
                "scann",
                f"ah-f32{suffix}",
            )
            for suffix, label, spill in (("", "", 1), ("-nospill", " without spill", 0))
        ),
        *(
            Variant(
                f"usearch{suffix}",
                f"facetrace usearch {dtype}",
                "facetrace",
                "usearch",
                {"dtype": dtype},
                "expansion_search",
                HNSW_SWEEP,
                "usearch",
                dtype,
                USEARCH_SLOW,
            )
            for suffix, dtype in (("", "f32"), ("-f16", "f16"), ("-i8", "i8"))
        ),
        Variant(
            "faiss-hnsw",
            "FAISS IndexHNSWFlat M=16",
            "faiss-hnsw",
            breadth="efSearch",
            sweep=HNSW_SWEEP,
            family="faiss-hnsw",
            codec="f32",
            slow="HNSW graph build",
        ),
        Variant(
            "milvus",
            "facetrace milvus (Lite, FLAT)",
            "facetrace",
            "milvus",
            family="milvus",
            codec="f32",
            slow="Milvus Lite inserts over gRPC and scans every vector per query (FLAT)",
        ),
    ]
}
DEFAULT_BACKENDS = "flat,scann,ivf-pq,ivf-sq8,usearch,milvus"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    """Where one size's files are (all in the size's folder under ``--workdir``)."""

    folder: Path
    n: int
    mode: str

    def path(self, name: str) -> Path:
        return self.folder / name


def make_data(n: int, args: argparse.Namespace, workdir: Path) -> Data:
    """Gallery, extra faces for incremental adds, queries and their identities, on disk.

    Reused when the folder already holds the same size, mode, seed and generator stats.
    """
    from facetrace.evaluation import synthetic

    per = tuple(int(x) for x in args.faces_per_identity.split("-"))
    faces_per = per[0] if len(per) == 1 else (per[0], per[1])
    folder = workdir / f"n{n}-{args.mode}-seed{args.seed}"
    data = Data(folder, n, args.mode)
    stats = None if args.mode == "uniform" else synthetic.load_stats()
    stamp = {
        "n": n,
        "mode": args.mode,
        "seed": args.seed,
        "faces_per_identity": args.faces_per_identity,
        "queries": args.queries,
        "stats": None if stats is None else stats.info.get("fitted_at"),
    }
    stamp_path = folder / "stamp.json"
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        say(f"reusing the {n:,} {args.mode} faces in {folder}")
        return data
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t = time.perf_counter()
    gallery = synthetic.plan_faces(n, faces_per, args.seed, args.mode, stats)
    last = [t]

    def progress(done: int) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            say(f"  {done:,} of {n:,} faces written")

    synthetic.generate_file(gallery, data.path("vectors.npy"), progress=progress)
    np.save(data.path("labels.npy"), gallery.labels())
    bigger = synthetic.plan_faces(n + ADD_BATCH * ADD_BATCHES, faces_per, args.seed, args.mode)
    extra = np.empty((ADD_BATCH * ADD_BATCHES, DIM), dtype=np.float32)
    synthetic.fill(bigger, extra, start=n)
    np.save(data.path("extra.npy"), extra)
    probes = synthetic.probes(gallery, args.queries, 0, seed=args.seed)
    np.save(data.path("queries.npy"), probes.vectors)
    np.save(data.path("query_identities.npy"), probes.identities)
    stamp_path.write_text(json.dumps(stamp))
    say(
        f"wrote {n:,} {args.mode} faces of {gallery.n_identities:,} identities and "
        f"{args.queries:,} queries in {time.perf_counter() - t:.0f} s"
    )
    return data


def read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows of a float32 ``.npy`` read with plain file reads (not mapped: RSS stays ours)."""
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        f.seek(f.tell() + start * ROW_BYTES)
        return np.fromfile(f, dtype=np.float32, count=(stop - start) * DIM).reshape(-1, DIM)


# --- the measuring processes ----------------------------------------------------------


def rss() -> int:
    """Resident bytes of this process and its children (Milvus Lite may run some)."""
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return int(total)


def peak_rss() -> int:
    """Peak resident bytes of this process (VmHWM; ru_maxrss survives exec on Linux, so
    it would report the parent's peak) plus its children's current RSS."""
    import psutil

    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    children = 0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            children += child.memory_info().rss
    return hwm + children


_MODULES = {
    "ivf": "faiss_ivf",
    "ivf-pq": "faiss_ivf_pq",
    "scann": "scann_index",
    "usearch": "usearch_index",
    "milvus": "milvus_index",
}


LISTED = ("ivf", "ivf-pq", "scann")  # facetrace backends searching k-means lists (nprobe)


def ivf_lists(adapter: Adapter) -> int:
    """The number of inverted lists of a facetrace ivf, ivf-pq or scann index."""
    index = adapter.index
    if adapter.variant.backend == "scann":
        return max(int(index.leaves), 1)
    inner = index._pq if adapter.variant.backend == "ivf-pq" else index._index
    return int(inner.nlist) if inner is not None else 1


def load_libraries(variant: Variant) -> None:
    """Import what the backend needs, so the RSS measured next excludes the libraries."""
    import importlib

    import faiss  # noqa: F401

    import facetrace.index  # noqa: F401

    if variant.backend in _MODULES:
        importlib.import_module(f"facetrace.index.{_MODULES[variant.backend]}")


def live_rss() -> int:
    """RSS after glibc returns freed heap pages (so allocator slack is not counted)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss()


class Adapter:
    """One interface over raw FAISS indexes and facetrace's VectorIndex backends."""

    def __init__(self, variant: Variant, index: Any, inner: Any = None) -> None:
        self.variant = variant
        self.index = index
        self.inner = inner  # the FAISS index inside an IndexIDMap2

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self.variant.kind == "facetrace":
            self.index.add(ids, vectors)
        else:
            self.index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        if self.variant.kind == "facetrace":
            return int(self.index.remove(ids))
        import faiss

        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries: np.ndarray, k: int = K) -> np.ndarray:
        if self.variant.kind == "facetrace":
            return np.asarray(self.index.search(queries, k)[0])
        return np.asarray(self.index.search(np.atleast_2d(queries), k)[1])

    def get_breadth(self) -> int:
        v = self.variant
        if v.kind == "faiss-hnsw":
            return int(self.inner.hnsw.efSearch)
        return int(getattr(self.index, v.breadth)) if v.breadth else 0

    def set_breadth(self, value: int) -> None:
        if self.variant.kind == "faiss-hnsw":
            self.inner.hnsw.efSearch = value
        elif self.variant.breadth:
            setattr(self.index, self.variant.breadth, value)

    def one_thread(self) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        if self.variant.backend == "usearch":
            self.index.threads = 1

    def save(self, path: Path) -> int:
        """Save; return the bytes on disk."""
        if self.variant.kind == "facetrace":
            from facetrace.index import index_files

            self.index.save(path)
            if self.variant.backend == "milvus":
                db = Path(self.variant_options(path)["uri"])
                return sum(p.stat().st_size for p in db.rglob("*") if p.is_file())
            return sum(p.stat().st_size for p in index_files(path))
        import faiss

        faiss.write_index(self.index, str(path))
        return path.stat().st_size

    def variant_options(self, path: Path) -> dict[str, Any]:
        return options_for(self.variant, path)


def options_for(variant: Variant, path: Path) -> dict[str, Any]:
    opts = dict(variant.options)
    if variant.backend == "milvus":
        opts["uri"] = str(path.with_name(path.name + "-lite.db"))
    return opts


def new_adapter(variant: Variant, path: Path, sizing: dict[str, int]) -> Adapter:
    if variant.kind == "facetrace":
        from facetrace.index import create_index

        opts = options_for(variant, path)
        if variant.backend in LISTED:
            opts.update(sizing)
        return Adapter(variant, create_index(variant.backend, DIM, **opts))
    import faiss

    if variant.kind == "faiss-flat":
        inner = faiss.IndexFlatIP(DIM)
    else:
        inner = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = 128
        inner.hnsw.efSearch = 64
    return Adapter(variant, faiss.IndexIDMap2(inner), inner)


def open_adapter(variant: Variant, path: Path, verify: bool) -> Adapter:
    if variant.kind == "facetrace":
        from facetrace.index import open_index

        return Adapter(variant, open_index(variant.backend, path, DIM, mmap=True, verify=verify))
    import faiss

    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    index = faiss.read_index(str(path), flags)
    inner = faiss.downcast_index(index.index) if variant.kind == "faiss-hnsw" else None
    return Adapter(variant, index, inner)


def child_build(
    variant: Variant, data: Data, index_path: Path, sizing: dict[str, int], batch: int
) -> dict:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    out: dict[str, Any] = {}
    load_libraries(variant)
    adapter = new_adapter(variant, index_path, sizing)
    before = live_rss()
    vectors = data.path("vectors.npy")
    t = time.perf_counter()
    for start in range(0, data.n, batch):
        stop = min(start + batch, data.n)
        adapter.add(np.arange(start, stop, dtype=np.int64), read_rows(vectors, start, stop))
        if data.n > BUILD_BATCH and stop % BUILD_BATCH < batch:
            say(f"  {variant.name}: {stop:,} added, {time.perf_counter() - t:.0f} s")
    out["build_s"] = time.perf_counter() - t
    out["rss_build"] = live_rss()
    out["index_bytes"] = out["rss_build"] - before
    if variant.backend in LISTED:
        out["nlist"] = ivf_lists(adapter)
        out["breadth_default"] = adapter.get_breadth()
    t = time.perf_counter()
    out["file_bytes"] = adapter.save(index_path)
    out["save_s"] = time.perf_counter() - t
    extra = np.load(data.path("extra.npy"))
    times = []
    for b in range(ADD_BATCHES):
        ids = np.arange(data.n + b * ADD_BATCH, data.n + (b + 1) * ADD_BATCH, dtype=np.int64)
        t = time.perf_counter()
        adapter.add(ids, extra[b * ADD_BATCH : (b + 1) * ADD_BATCH])
        times.append(time.perf_counter() - t)
    out["add_per_s"] = ADD_BATCH * ADD_BATCHES / sum(times)
    out.update(delete_check(adapter, data))
    if variant.backend == "milvus":  # its saved index is the live collection: undo
        restore(adapter, data)
    out["peak_rss"] = peak_rss()
    return out


def delete_check(adapter: Adapter, data: Data) -> dict[str, Any]:
    """Remove the first query's identity; its faces must be gone from the next search."""
    labels = np.load(data.path("labels.npy"), mmap_mode="r")
    who = int(np.load(data.path("query_identities.npy"))[0])
    query = np.load(data.path("queries.npy"))[:1]
    if who < 0:  # uniform data has identities too; a non-mated probe would not
        return {"delete": "-"}
    lo, hi = np.searchsorted(labels, [who, who + 1])
    ids = np.arange(lo, hi, dtype=np.int64)
    found_before = int(np.isin(adapter.search(query), ids).sum())
    t = time.perf_counter()
    try:
        removed = adapter.remove(ids)
    except RuntimeError as exc:
        what = "not supported" if "not implemented" in str(exc) else str(exc).splitlines()[0]
        return {"delete": f"no ({what[:60]})", "delete_ok": False}
    remove_ms = (time.perf_counter() - t) * 1000
    found_after = int(np.isin(adapter.search(query, 100), ids).sum())
    verdict = "yes" if found_after == 0 and removed == ids.size else "NO"
    return {
        "delete": f"{verdict} ({removed} faces, {remove_ms:.0f} ms; top-10 had "
        f"{found_before}, next search {found_after})",
        "delete_ok": verdict == "yes",
    }


def restore(adapter: Adapter, data: Data) -> None:
    """Take the incremental adds out and put the deleted identity back."""
    adapter.remove(np.arange(data.n, data.n + ADD_BATCH * ADD_BATCHES, dtype=np.int64))
    labels = np.load(data.path("labels.npy"), mmap_mode="r")
    who = int(np.load(data.path("query_identities.npy"))[0])
    if who >= 0:
        lo, hi = (int(x) for x in np.searchsorted(labels, [who, who + 1]))
        adapter.add(np.arange(lo, hi, dtype=np.int64), read_rows(data.path("vectors.npy"), lo, hi))


def child_search(
    variant: Variant, data: Data, index_path: Path, latency_queries: int, sweep_queries: int
) -> dict:
    """Single-query latency on one thread (see the module docstring), and the curve."""
    out: dict[str, Any] = {}
    load_libraries(variant)
    before = live_rss()
    if variant.kind == "facetrace" and variant.backend != "milvus":
        t = time.perf_counter()
        checked = open_adapter(variant, index_path, verify=True)
        out["open_verify_s"] = time.perf_counter() - t
        del checked
        before = live_rss()
    t = time.perf_counter()
    adapter = open_adapter(variant, index_path, verify=variant.backend == "milvus")
    out["open_s"] = time.perf_counter() - t  # Milvus: starting Lite; its check is tiny
    out["rss_open"] = rss() - before
    adapter.one_thread()
    queries = np.load(data.path("queries.npy"))
    truth_path = data.path("truth.npy")
    truth = np.load(truth_path) if truth_path.is_file() else None
    who = np.load(data.path("query_identities.npy"))
    labels = np.load(data.path("labels.npy"), mmap_mode="r")
    n_lat = min(latency_queries, len(queries))
    for q in queries[:WARMUP]:
        adapter.search(q[None, :])
    found, p50, p99 = timed(adapter, queries[:n_lat])
    out.update(p50_ms=p50, p99_ms=p99, latency_queries=n_lat)
    out["rss_queried"] = rss() - before
    if variant.breadth:
        default = adapter.get_breadth()
        out["breadth_default"] = default
        curve = []
        n_sweep = min(n_lat, sweep_queries)
        out["sweep_queries"] = n_sweep
        for value in sweep_values(variant, adapter, curve):
            adapter.set_breadth(value)
            adapter.search(queries[0][None, :])
            got, c50, c99 = timed(adapter, queries[:n_sweep])
            point = {"breadth": value, "p50_ms": c50, "p99_ms": c99}
            if truth is not None:
                point["recall10"] = recall(got, truth[:n_sweep], K)
            point["mates10"] = mate_rate(got, who[:n_sweep], labels)
            curve.append(point)
            say(f"  {variant.name} {variant.breadth}={value}: {point}")
        adapter.set_breadth(default)
        out["curve"] = curve
    del found
    return out


def sweep_values(variant: Variant, adapter: Adapter, curve: list[dict]) -> Iterator[int]:
    """The sweep, then doubling while recall@10 is below 0.995 (up to nlist or 4,096)."""
    limit = 4096
    if variant.backend in LISTED:
        limit = min(limit, ivf_lists(adapter))
    yield from (v for v in variant.sweep if v <= limit or variant.backend not in LISTED)
    value = variant.sweep[-1] * 2
    while curve and curve[-1].get("recall10", 1.0) < 0.995 and value <= limit:
        if len(curve) > 1 and curve[-1]["recall10"] - curve[-2].get("recall10", 0) < 0.002:
            return  # a plateau: quantisation, not breadth, limits recall
        yield value
        value *= 2


def timed(adapter: Adapter, queries: np.ndarray) -> tuple[np.ndarray, float, float]:
    found = np.empty((len(queries), K), dtype=np.int64)
    times = np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        found[i] = adapter.search(q[None, :])[0]
        times[i] = time.perf_counter() - t
    return found, float(np.percentile(times, 50) * 1000), float(np.percentile(times, 99) * 1000)


def child_batch(variant: Variant, data: Data, index_path: Path) -> dict:
    """All queries in one call on all cores; recall and mate hit rate of the results."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    adapter = open_adapter(variant, index_path, verify=False)
    queries = np.load(data.path("queries.npy"))
    adapter.search(queries[:WARMUP])
    t = time.perf_counter()
    found = adapter.search(queries)
    elapsed = time.perf_counter() - t
    truth_path = data.path("truth.npy")
    if variant.kind == "faiss-flat" and not truth_path.is_file():
        np.save(truth_path, found)
    truth = np.load(truth_path)
    who = np.load(data.path("query_identities.npy"))
    labels = np.load(data.path("labels.npy"), mmap_mode="r")
    return {
        "batch_qps": len(queries) / elapsed,
        "recall1": recall(found, truth, 1),
        "recall10": recall(found, truth, K),
        "mates10": mate_rate(found, who, labels),
    }


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of the exact top ``k`` that was found in the top ``k``."""
    pairs = zip(found.tolist(), truth.tolist(), strict=True)
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in pairs)
    return hits / (len(truth) * k)


def mate_rate(found: np.ndarray, who: np.ndarray, labels: np.ndarray) -> float | None:
    """Share of mated queries with a face of their own identity in the results."""
    mated = who >= 0
    if not mated.any():
        return None
    ids = found[mated]
    valid = ids >= 0
    own = np.zeros(ids.shape, dtype=bool)
    own[valid] = np.asarray(labels)[ids[valid]] == np.repeat(who[mated], K)[valid.ravel()]
    return float(own.any(axis=1).mean())


def _child_main(fn: Callable[..., dict], args: tuple, queue: Any) -> None:
    try:
        queue.put(fn(*args))
    except BaseException:
        queue.put({"error": traceback.format_exc()})


def in_child(fn: Callable[..., dict], *args: Any, env: dict[str, str] | None = None) -> dict:
    """Run ``fn(*args)`` in a fresh spawned process with ``env`` added; its result dict."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        proc = ctx.Process(target=_child_main, args=(fn, args, queue))
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    result: dict | None = None
    while result is None:
        try:
            result = queue.get(timeout=5)
        except Exception:  # queue.Empty
            if not proc.is_alive():
                code = proc.exitcode
                result = {"error": TERMINATED if code == -15 else f"process died (exit {code})"}
    proc.join()
    return result


# --- one size -------------------------------------------------------------------------


def measure(variant: Variant, data: Data, args: argparse.Namespace) -> dict[str, Any]:
    """Build, search and batch processes for one backend; its index files are removed."""
    folder = data.folder / f"index-{variant.name}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    path = folder / ("index.faiss" if variant.kind != "facetrace" else "index")
    result: dict[str, Any] = {"variant": variant.name}
    latency_queries = args.queries if variant.breadth else min(args.queries, 200)
    steps: list[tuple[str, Callable[..., dict], tuple, dict[str, str] | None]] = [
        (
            "build",
            child_build,
            (variant, data, path, sizing(data.n, args, variant.backend), args.build_batch),
            None,
        ),
        ("batch", child_batch, (variant, data, path), None),
        (
            "search",
            child_search,
            (variant, data, path, latency_queries, args.sweep_queries),
            SINGLE_THREAD_ENV,
        ),
    ]
    try:
        for name, fn, fn_args, env in steps:
            for attempt in range(3):
                say(f"{variant.name} at {data.n:,}: {name} ...")
                t = time.perf_counter()
                got = in_child(fn, *fn_args, env=env)
                say(f"{variant.name} at {data.n:,}: {name} done in {time.perf_counter() - t:.0f} s")
                if got.get("error") != TERMINATED or attempt == 2:
                    break
                # Seen twice on the shared machine: something outside sent SIGTERM.
                say(f"{variant.name}: the {name} process was terminated from outside; again")
                if name == "build":
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.mkdir()
            if "error" in got:
                say(got["error"])
                result["error"] = f"{name}: {got['error'].strip().splitlines()[-1]}"
                break
            result.update(got)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def sizing(n: int, args: argparse.Namespace, backend: str = "ivf") -> dict[str, int]:
    """What a list-trained facetrace backend is told of ``n`` faces: its lists, the size
    to train for (``expect``), or nothing (it grows and retrains)."""
    if args.ivf_nlist == "expect":
        return {"expect": n}
    lists = ivf_nlist(n, args, backend)
    return {"nlist": lists} if lists else {}


def ivf_nlist(n: int, args: argparse.Namespace, backend: str = "ivf") -> int | None:
    """The lists for ``n`` faces (None: the backend's choice); ``scann`` has its own rule
    and cap, the FAISS backends share theirs."""
    if args.ivf_nlist in ("backend", "expect"):
        return None
    if args.ivf_nlist == "auto":
        if backend == "scann":
            from facetrace.index.scann_index import auto_nlist as scann_nlist

            return scann_nlist(n)
        from facetrace.index.faiss_ivf import auto_nlist

        return min(auto_nlist(n), args.ivf_max_nlist)
    return int(args.ivf_nlist)


def not_run_reason(variant: Variant, n: int, done: dict[int, dict[str, dict]]) -> str:
    """Why a slow backend is not run at size ``n``, with its rates at a smaller size."""
    smaller = [m for m in sorted(done) if m < n and variant.name in done[m]]
    reason = f"not run at {n:,}: {variant.slow}"
    if not smaller:
        return reason + " (run it at 1,000,000 first for rates; --force-slow runs it)"
    m = smaller[-1]
    r = done[m][variant.name]
    if "build_s" not in r:
        return reason
    rate = m / r["build_s"]
    text = f"{reason}; at {m:,} it built {rate:,.0f} faces/s, so about {n / rate / 60:.0f} min"
    if variant.backend == "milvus" and "p50_ms" in r:
        text += f", and p50 {r['p50_ms']:.0f} ms would grow to about {r['p50_ms'] * n / m:.0f} ms"
    return text + " (--force-slow runs it)"


def disk_needed(n: int, variants: list[Variant]) -> int:
    """Bytes of the data files plus the largest index file, with a 20% margin."""
    per_face = {
        "f32": 640,
        "flat": 560,
        "fp16": 300,
        "f16": 400,
        "sq8": 170,
        "i8": 300,
        "pq-f32": 600,
        "pq-fp16": 340,
    }
    biggest = max(
        per_face.get(v.codec, 640) * (2 if v.backend == "milvus" else 1) for v in variants
    )
    return int(1.2 * (n * (ROW_BYTES + 8) + n * biggest + ADD_BATCH * ADD_BATCHES * ROW_BYTES))


def check_disk(workdir: Path, n: int, variants: list[Variant]) -> None:
    need = disk_needed(n, variants)
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise SystemExit(
            f"error: {n:,} faces need about {need / GB:.1f} GB free in {workdir}, and only "
            f"{free / GB:.1f} GB are; pass --workdir on a larger disk or a smaller --sizes"
        )


# --- output ---------------------------------------------------------------------------


def num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def main_table(n: int, results: dict[str, dict]) -> list[str]:
    exact = results.get("flat", {}).get("p50_ms")
    raw = n * ROW_BYTES
    rows = []
    for name, r in results.items():
        v = VARIANTS[name]
        if "not_run" in r or "error" in r:
            continue
        build_rate = n / r["build_s"] if "build_s" in r else None
        p50 = r.get("p50_ms")
        breadth = f" ({v.breadth} {r['breadth_default']})" if "breadth_default" in r else ""
        if "nlist" in r:
            breadth = f" (nlist {r['nlist']}, nprobe {r['breadth_default']})"
        rows.append(
            [
                v.label + breadth,
                num(r.get("build_s"), ".0f"),
                num(build_rate, ",.0f"),
                num(r.get("add_per_s"), ",.0f"),
                num(r.get("index_bytes", 0) / GB, ".2f"),
                num(r.get("index_bytes", 0) / raw, ".2f"),
                num(r.get("peak_rss", 0) / GB, ".2f"),
                num(r.get("file_bytes", 0) / GB, ".2f"),
                num(r.get("open_s"), ".2f"),
                num(r.get("open_verify_s"), ".1f"),
                f"{r.get('rss_open', 0) / GB:.2f} / {r.get('rss_queried', 0) / GB:.2f}",
                num(p50, ".3f"),
                num(r.get("p99_ms"), ".3f"),
                num(exact / p50 if exact and p50 else None, ".1f"),
                num(r.get("batch_qps"), ",.0f"),
                num(r.get("recall1"), ".4f"),
                num(r.get("recall10"), ".4f"),
                num(r.get("mates10"), ".4f"),
                r.get("delete", "-"),
            ]
        )
    headers = [
        "backend",
        "build s",
        "build /s",
        "add /s (10k batches)",
        "index GB",
        "x raw f32",
        "peak GB",
        "file GB",
        "open s (mmap)",
        "open s (+SHA-256)",
        "RSS open / queried GB",
        "p50 ms",
        "p99 ms",
        "x exact p50",
        "batch q/s",
        "recall@1",
        "recall@10",
        "mates@10",
        "delete (immediate?)",
    ]
    return table(headers, rows)


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return out + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def curve_table(results: dict[str, dict]) -> list[str]:
    exact = results.get("flat", {}).get("p50_ms")
    rows = []
    for name, r in results.items():
        for point in r.get("curve", []):
            p50 = point["p50_ms"]
            rows.append(
                [
                    VARIANTS[name].label,
                    f"{VARIANTS[name].breadth} {point['breadth']}",
                    num(p50, ".3f"),
                    num(point["p99_ms"], ".3f"),
                    num(point.get("recall10"), ".4f"),
                    num(point.get("mates10"), ".4f"),
                    num(exact / p50 if exact else None, ".0f"),
                ]
            )
    headers = ["backend", "breadth", "p50 ms", "p99 ms", "recall@10", "mates@10", "x exact p50"]
    return table(headers, rows) if rows else []


def compression_table(n: int, results: dict[str, dict]) -> list[str]:
    rows = []
    base: dict[str, float] = {}
    for name, r in results.items():
        v = VARIANTS[name]
        if v.family not in ("ivf", "ivf-pq", "scann", "usearch") or "recall10" not in r:
            continue
        if v.codec in ("flat", "f32", "pq-f32"):
            base[v.family] = r["recall10"]
        widest = r.get("curve", [{}])[-1]
        rows.append(
            [
                v.label,
                v.codec,
                num(r["index_bytes"] / GB, ".2f"),
                num(r["index_bytes"] / (n * ROW_BYTES), ".2f"),
                num(r["file_bytes"] / GB, ".2f"),
                num(r["recall10"], ".4f"),
                num(r["recall10"] - base[v.family] if v.family in base else None, "+.4f"),
                f"{num(widest.get('recall10'), '.4f')} ({v.breadth} {widest.get('breadth', '-')})",
                num(r.get("mates10"), ".4f"),
                num(r.get("p50_ms"), ".3f"),
            ]
        )
    headers = [
        "backend",
        "codec",
        "index GB",
        "x raw f32",
        "file GB",
        "recall@10 (default breadth)",
        "loss vs uncompressed",
        "recall@10 widest",
        "mates@10",
        "p50 ms",
    ]
    return table(headers, rows) if rows else []


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def targets(n: int, mode: str, results: dict[str, dict], name: str = "ivf") -> list[str]:
    """PASS/FAIL of each target for one facetrace ANN variant (``ivf``, ``ivf-pq``)."""
    ivf, exact = results.get(name, {}), results.get("flat", {})
    where = f"{n:,} faces, {mode}"
    if "recall10" not in ivf or "p50_ms" not in exact:
        return [f"- targets at {where}: not measured (ivf or exact did not run)"]
    points = [p for p in ivf.get("curve", []) if p.get("recall10", 0) >= 0.99]
    out = []
    if points:
        best = min(points, key=lambda p: p["p50_ms"])
        speedup = exact["p50_ms"] / best["p50_ms"]
        out.append(
            f"- {verdict(best['p50_ms'] <= 5)} p50 <= 5 ms at recall@10 >= 0.99 ({where}): "
            f"{best['p50_ms']:.2f} ms at nprobe {best['breadth']}, recall@10 "
            f"{best['recall10']:.4f} ({ivf.get('sweep_queries', 200):,} queries)"
        )
        out.append(
            f"- {verdict(speedup >= 20)} at least 20x faster than exact FAISS: "
            f"{speedup:.0f}x ({best['p50_ms']:.2f} vs {exact['p50_ms']:.1f} ms p50, one thread)"
        )
    else:
        out.append(f"- FAIL p50 <= 5 ms at recall@10 >= 0.99 ({where}): no nprobe reached 0.99")
        out.append("- FAIL at least 20x faster than exact FAISS: no point at recall@10 0.99")
    raw = n * ROW_BYTES
    ratio = ivf["index_bytes"] / raw
    out.append(f"- {verdict(ratio <= 1.3)} memory <= 1.3x raw f32: {name} {ratio:.2f}x")
    for other in (f"{name}-fp16", f"{name}-sq8"):
        r = results.get(other, {})
        if "recall10" in r:
            x = r["index_bytes"] / raw
            ok = x < ratio and r["recall10"] >= 0.98
            out.append(
                f"- {verdict(ok)} less with compression at recall@10 >= 0.98: {other} {x:.2f}x "
                f"raw at recall@10 {r['recall10']:.4f} (nprobe {r.get('breadth_default')})"
            )
    out.append(
        f"- {verdict(ivf['add_per_s'] >= 5000)} incremental add >= 5,000 vectors/s: "
        f"{ivf['add_per_s']:,.0f}/s in batches of {ADD_BATCH:,}"
    )
    out.append(f"- {verdict(bool(ivf.get('delete_ok')))} delete is immediate: {ivf['delete']}")
    opened = ivf.get("open_verify_s", ivf["open_s"])
    out.append(
        f"- {verdict(opened < 60)} opening takes seconds: {opened:.1f} s with the SHA-256 "
        f"check (the default), {ivf['open_s']:.2f} s without"
    )
    return out


def report(n: int, mode: str, results: dict[str, dict]) -> list[str]:
    lines = [f"### {n:,} faces ({mode})", ""]
    lines += main_table(n, results)
    curve = curve_table(results)
    if curve:
        lines += ["Recall/latency curve (one thread, single queries, k=10):", ""] + curve
    comp = compression_table(n, results)
    if comp:
        lines += ["Compression (recall loss against memory):", ""] + comp
    for name, r in results.items():
        if "not_run" in r:
            lines.append(f"- {VARIANTS[name].label}: {r['not_run']}")
        if "error" in r:
            lines.append(f"- {VARIANTS[name].label}: ERROR {r['error']}")
    for name in LISTED:
        if name in results:
            lines += ["", f"Targets (facetrace {name}):", ""]
            lines += targets(n, mode, results, name) + [""]
    return lines


def machine() -> str:
    import psutil

    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB"


def openblas_coretype(choice: str) -> str:
    """Set OPENBLAS_CORETYPE for the measuring processes; return what it is."""
    if choice == "auto" and "OPENBLAS_CORETYPE" not in os.environ:
        with open("/proc/cpuinfo") as f:
            if " avx512f" in f.read():
                os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif choice not in ("auto", "none"):
        os.environ["OPENBLAS_CORETYPE"] = choice
    return os.environ.get("OPENBLAS_CORETYPE", "unset")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="1000000,10000000", help="gallery sizes, comma-separated"
    )
    parser.add_argument("--backends", default=DEFAULT_BACKENDS, help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--queries", type=int, default=1000, help="queries (mated probes)")
    parser.add_argument(
        "--sweep-queries",
        type=int,
        default=1000,
        help="queries at each point of the recall/latency curve (the first of --queries)",
    )
    parser.add_argument("--mode", choices=("dlib", "uniform"), default="dlib")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--faces-per-identity", default="1-7", help="N or LOW-HIGH")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--json", type=Path, help="also write every measurement as JSON")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/facetrace-index-bench"))
    parser.add_argument("--keep-data", action="store_true", help="keep the vectors afterwards")
    parser.add_argument(
        "--resume", action="store_true", help="keep the results an interrupted run saved"
    )
    parser.add_argument("--force-slow", action="store_true", help="run slow backends at any size")
    parser.add_argument(
        "--ivf-nlist",
        default="auto",
        help="ivf lists: auto (the backend's rule for the final size, at most "
        "--ivf-max-nlist, passed up front so batch adds never retrain), backend (let it "
        "grow and retrain as an ingest would), expect (told the final size, as "
        "facetrace reindex does), or a number",
    )
    parser.add_argument(
        "--build-batch",
        type=int,
        default=BUILD_BATCH,
        help="faces added at a time while building (a rebuild reads 20,000 at a time)",
    )
    parser.add_argument("--ivf-max-nlist", type=int, default=4096, help="cap for auto")
    parser.add_argument("--openblas-coretype", default="auto", help="auto, none or a name")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    names = [b for b in args.backends.split(",") if b]
    unknown = [b for b in names if b not in VARIANTS]
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {', '.join(VARIANTS)}")
    if "flat" not in names:
        names.insert(0, "flat")  # the ground truth and the speed reference
    variants = [VARIANTS[b] for b in names]
    args.workdir.mkdir(parents=True, exist_ok=True)
    check_disk(args.workdir, max(sizes), variants)
    coretype = openblas_coretype(args.openblas_coretype)
    started = time.perf_counter()
    head = [
        "## facetrace vector index benchmark",
        "",
        f"- command: `{' '.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {machine()}",
        f"- data: `facetrace.evaluation.synthetic` mode {args.mode}, seed {args.seed}, "
        f"{args.faces_per_identity} faces per identity; {args.queries:,} mated queries, k={K}",
        f"- OPENBLAS_CORETYPE={coretype} (faiss's bundled OpenBLAS); ivf nlist "
        + ", ".join(f"{ivf_nlist(n, args) or args.ivf_nlist} at {n:,}" for n in sizes)
        + ("; scann leaves " if "scann" in names else "")
        + ", ".join(
            f"{ivf_nlist(n, args, 'scann') or args.ivf_nlist} at {n:,}"
            for n in (sizes if "scann" in names else [])
        ),
        "",
    ]
    print("\n".join(head), flush=True)
    lines = list(head)
    done: dict[int, dict[str, dict]] = {}
    progress_file = args.workdir / f"results-{args.mode}-seed{args.seed}.json"
    saved: dict[str, dict[str, dict]] = {}
    if args.resume and progress_file.is_file():
        saved = json.loads(progress_file.read_text())
    for n in sizes:
        check_disk(args.workdir, n, variants)
        data = make_data(n, args, args.workdir)
        results: dict[str, dict] = {}
        for v in variants:
            if v.slow and n > SLOW_ABOVE and not args.force_slow:
                results[v.name] = {"not_run": not_run_reason(v, n, done)}
                say(f"{v.name}: {results[v.name]['not_run']}")
                continue
            kept = saved.get(str(n), {}).get(v.name, {})
            if kept and "error" not in kept and data.path("truth.npy").is_file():
                say(f"{v.name} at {n:,}: kept from an earlier run (--resume)")
                results[v.name] = kept
                continue
            results[v.name] = measure(v, data, args)
            saved.setdefault(str(n), {})[v.name] = results[v.name]
            progress_file.write_text(json.dumps(saved, indent=1))
        done[n] = results
        section = report(n, args.mode, results)
        print("\n".join(section), flush=True)
        lines += section
        if not args.keep_data:
            shutil.rmtree(data.folder, ignore_errors=True)
    peaks = [(r.get("peak_rss", 0), name, n) for n, rs in done.items() for name, r in rs.items()]
    top = max(peaks, default=(0, "-", 0))
    lines.append(
        f"Total time: {(time.perf_counter() - started) / 60:.1f} min. Largest process: "
        f"{top[0] / 2**30:.1f} GiB peak ({top[1]} at {top[2]:,})."
    )
    print(lines[-1])
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps({str(n): r for n, r in done.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

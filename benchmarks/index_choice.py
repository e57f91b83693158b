"""Which vector index should facetrace use? Measures the candidates side by side, in one run.

Not a test: run it by hand, on a quiet machine, and copy its table into
``docs/index-backends.md``::

    .venv/bin/python benchmarks/index_choice.py --n 100000 --markdown

Data. ``N`` 128-d vectors shaped like dlib face embeddings, calibrated on 199 dlib
descriptors of 40 LFW people: every vector is close to one common direction (cosine
~0.92 to the mean), different people have cosine ~0.84, photos of one person ~0.95,
and the spread is anisotropic. About four photos per identity; the queries are new
photos of gallery identities. ``--uniform`` draws uniform vectors on the sphere instead
(the worst case for ANN graphs). Everything is seeded.

Candidates. FAISS ``IndexFlatIP`` (the exact reference every recall is measured
against); facetrace's ``exact`` backend (NumPy); FAISS ``IndexHNSWFlat`` with M=16,
efConstruction=128, efSearch=64 (the same graph settings as facetrace's usearch
backend, to keep build time reasonable); facetrace's ``usearch`` backend with f32 and
i8 storage (connectivity 16, expansion_add 128, expansion_search 64); hnswlib when it
is importable (M=16, ef_construction=128, ef=64).

Measures. Builds use every core; queries use one thread (``faiss.omp_set_num_threads(1)``,
usearch ``threads=1``), one query at a time, k=10: ``p50 ms`` is the median latency and
``recall@10`` the share of the exact top 10 found. ``file MB`` is the saved size, ``open
s`` the time to open it again (facetrace's backends check the file's SHA-256 first).
The capability columns come from small probes run here: ``remove`` (a removed id is
never returned again), ``mmap`` (searching a memory-mapped file gives the same answers),
``filter`` (search restricted to a set of allowed ids). ``mates@10`` is the share of
the query's own-identity photos in the exact top 10 that were found; ``self@1`` the share
of 2,000 gallery vectors found first when searched for themselves (faces the index can
never return lower it). facetrace's usearch backend adds on one thread (see
``facetrace.index.usearch_index``); the library-only row adds on all cores.
"""

from __future__ import annotations

import os

# One-thread query timings must include NumPy's: on 2 cores a multi-threaded OpenBLAS made
# one 10k x 128 product take 0.2-8 ms instead of a steady 0.18 ms. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from facetrace.index import create_index, index_files, open_index  # noqa: E402
from facetrace.index.usearch_index import UsearchIndex  # noqa: E402

DIM = 128
K = 10
SEED = 20261128
SWEEP = (32, 64, 128, 256, 512)


@dataclass
class Result:
    """One row of the table."""

    backend: str
    build_s: float | None = None
    add_per_s: float | None = None
    p50_ms: float | None = None
    recall10: float | None = None
    mates10: float | None = None
    self1: float | None = None
    file_mb: float | None = None
    open_s: float | None = None
    remove: str = "-"
    mmap: str = "-"
    filter: str = "-"
    note: str = ""
    sweep: dict[int, tuple[float, float, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    """Gallery vectors (unit rows), their ids, queries and the exact top-10 of each.

    ``mates[i]`` holds the ids in query i's exact top 10 that are photos of the query's
    own identity: the answers a searcher wants (empty for uniform vectors).
    """

    vectors: np.ndarray
    ids: np.ndarray
    queries: np.ndarray
    truth: np.ndarray
    mates: list[set[int]]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def face_like(
    n: int, n_queries: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gallery, queries and their identities, drawn like dlib embeddings."""
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(DIM)) ** 0.8  # anisotropic spread
    spectrum /= np.linalg.norm(spectrum)
    common = basis[:, -1]  # shared direction, orthogonal-ish to the main spread

    def spread(rows: int, radius: float) -> np.ndarray:
        return (rng.standard_normal((rows, DIM)) * spectrum) @ basis.T * radius

    people = max(1, n // 4)
    means = common + spread(people, np.sqrt(0.156))  # cos ~0.93 to the common direction
    who = rng.integers(0, people, n)
    who_queries = rng.integers(0, people, n_queries)
    gallery = unit(means[who] + spread(n, np.sqrt(0.048)))  # cos ~0.98 to the own mean
    queries = unit(means[who_queries] + spread(n_queries, np.sqrt(0.048)))
    return gallery, queries, who, who_queries


def make_data(n: int, n_queries: int, uniform: bool) -> Data:
    import faiss

    rng = np.random.default_rng(SEED)
    if uniform:
        vectors = unit(rng.standard_normal((n, DIM)))
        queries = unit(rng.standard_normal((n_queries, DIM)))
        who = who_queries = None
    else:
        vectors, queries, who, who_queries = face_like(n, n_queries, rng)
    ids = rng.permutation(n).astype(np.int64) + 1_000_000  # ids unrelated to row order
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    flat.add_with_ids(vectors, ids)
    _, truth = flat.search(queries, K)
    mates: list[set[int]] = [set() for _ in range(n_queries)]
    if who is not None and who_queries is not None:
        identity = dict(zip(ids.tolist(), who.tolist(), strict=True))
        for i, row in enumerate(truth.tolist()):
            mates[i] = {j for j in row if identity[j] == who_queries[i]}
    return Data(vectors=vectors, ids=ids, queries=queries, truth=truth, mates=mates)


def timed_queries(
    search_one: Callable[[np.ndarray], np.ndarray], data: Data
) -> tuple[float, float, float | None]:
    """(p50 ms, recall@10, mates@10) of one query at a time.

    recall@10: share of the exact top 10 found. mates@10: share of the same-identity
    photos in the exact top 10 found (None without identities).
    """
    search_one(data.queries[0])  # warm up
    found = np.empty_like(data.truth)
    times = np.empty(len(data.queries))
    for i, q in enumerate(data.queries):
        t = time.perf_counter()
        found[i] = search_one(q)
        times[i] = time.perf_counter() - t
    rows = [set(f) for f in found.tolist()]
    hits = sum(len(r & set(t)) for r, t in zip(rows, data.truth.tolist(), strict=True))
    wanted = sum(len(m) for m in data.mates)
    mates = sum(len(r & m) for r, m in zip(rows, data.mates, strict=True))
    return (
        float(np.median(times) * 1000),
        hits / data.truth.size,
        mates / wanted if wanted else None,
    )


def measure(result: Result, search_one: Callable[[np.ndarray], np.ndarray], data: Data) -> None:
    """Timings and recall of the queries; self@1 on up to 2,000 gallery vectors.

    self@1 is the share of gallery vectors that come first when searched for themselves:
    below 1.0 means some faces cannot be found at all (unreachable in a graph index).
    """
    result.p50_ms, result.recall10, result.mates10 = timed_queries(search_one, data)
    rows = np.random.default_rng(2).choice(len(data.ids), min(2000, len(data.ids)), replace=False)
    hits = sum(int(search_one(data.vectors[r])[0] == data.ids[r]) for r in rows)
    result.self1 = hits / len(rows)


def sweep(
    result: Result,
    set_ef: Callable[[int], None],
    search_one: Callable[[np.ndarray], np.ndarray],
    data: Data,
) -> None:
    """Query timings at several search breadths (ef); leaves ef at 64."""
    for ef in SWEEP:
        set_ef(ef)
        result.sweep[ef] = timed_queries(search_one, data)
    set_ef(64)


def yes_no(ok: bool, yes: str = "yes", no: str = "no") -> str:
    return yes if ok else no


def probe_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return unit(rng.standard_normal((1000, DIM))), np.arange(1000, dtype=np.int64)


# --- FAISS ----------------------------------------------------------------------------


def faiss_backend(kind: str, data: Data, workdir: Path) -> Result:
    import faiss as faiss_module

    faiss: Any = faiss_module  # its SWIG stubs lack SearchParameters(sel=...) and more

    def make() -> tuple[Any, Any]:
        """(the id-mapped index, the index inside it)."""
        if kind == "flat":
            inner = faiss.IndexFlatIP(DIM)
        else:
            inner = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 128
            inner.hnsw.efSearch = 64
        return faiss.IndexIDMap2(inner), inner

    name = "FAISS IndexFlatIP (exact)" if kind == "flat" else "FAISS IndexHNSWFlat M=16"
    result = Result(name)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index, inner = make()
    t = time.perf_counter()
    index.add_with_ids(data.vectors, data.ids)
    result.build_s = time.perf_counter() - t
    result.add_per_s = len(data.ids) / result.build_s
    faiss.omp_set_num_threads(1)

    def search_one(q: np.ndarray) -> np.ndarray:
        return np.asarray(index.search(q[None, :], K)[1][0])

    measure(result, search_one, data)
    if kind == "hnsw":
        sweep(result, lambda ef: setattr(inner.hnsw, "efSearch", ef), search_one, data)
    path = workdir / f"faiss-{kind}.index"
    faiss.write_index(index, str(path))
    result.file_mb = path.stat().st_size / 1e6
    t = time.perf_counter()
    faiss.read_index(str(path))
    result.open_s = time.perf_counter() - t

    vectors, ids = probe_data()
    small, _ = make()
    small.add_with_ids(vectors, ids)
    try:
        small.remove_ids(faiss.IDSelectorBatch(np.array([5], dtype=np.int64)))
        result.remove = yes_no(5 not in small.search(vectors[5:6], K)[1][0])
    except RuntimeError:
        result.remove = "no"
    small_path = workdir / f"faiss-{kind}-probe.index"
    faiss.write_index(small, str(small_path))
    try:
        mapped = faiss.read_index(str(small_path), faiss.IO_FLAG_MMAP_IFC)
        same = (mapped.search(vectors[:20], K)[1] == small.search(vectors[:20], K)[1]).all()
        result.mmap = yes_no(bool(same))
    except RuntimeError:
        result.mmap = "no"
    allowed = np.arange(0, 1000, 2, dtype=np.int64)
    selector = faiss.IDSelectorBatch(allowed)
    if kind == "flat":
        params = faiss.SearchParameters(sel=selector)
    else:
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=64)
    try:
        _, got = small.search(vectors[:20], K, params=params)
        result.filter = yes_no(bool(np.isin(got[got >= 0], allowed).all()))
    except RuntimeError:
        result.filter = "no"
    if kind == "hnsw":
        result.note = "efConstruction=128, efSearch=64"
    return result


# --- facetrace backends -----------------------------------------------------------------


def facetrace_backend(label: str, backend: str, data: Data, workdir: Path, **opts: Any) -> Result:
    result = Result(label)
    index = create_index(backend, DIM, **opts)
    t = time.perf_counter()
    index.add(data.ids, data.vectors)
    result.build_s = time.perf_counter() - t
    result.add_per_s = len(data.ids) / result.build_s

    def search_one(q: np.ndarray) -> np.ndarray:
        return index.search(q, K)[0][0]

    if isinstance(index, UsearchIndex):
        ann = index
        ann.threads = 1
        sweep(result, lambda ef: setattr(ann, "expansion_search", ef), search_one, data)
    measure(result, search_one, data)
    path = workdir / f"{label.replace(' ', '-')}.index"
    index.save(path)
    result.file_mb = sum(p.stat().st_size for p in index_files(path)) / 1e6
    t = time.perf_counter()
    opened = open_index(backend, path, DIM)
    result.open_s = time.perf_counter() - t
    t = time.perf_counter()
    open_index(backend, path, DIM, verify=False)
    result.note = f"open {time.perf_counter() - t:.2f} s without SHA-256 check"
    del opened

    vectors, ids = probe_data()
    small = create_index(backend, DIM, **opts)
    small.add(ids, vectors)
    small.remove(np.array([5]))
    result.remove = yes_no(5 not in small.search(vectors[5], K)[0][0])
    small_path = workdir / f"{label.replace(' ', '-')}-probe.index"
    small.save(small_path)
    mapped = open_index(backend, small_path, DIM, mmap=True)
    same = (mapped.search(vectors[:20], K)[0] == small.search(vectors[:20], K)[0]).all()
    result.mmap = yes_no(bool(same), "yes (view)" if backend == "usearch" else "yes")
    result.filter = "no"  # not in the VectorIndex interface
    return result


def usearch_library(data: Data, workdir: Path) -> Result:
    """usearch itself, without facetrace's checks, normalisation and padding."""
    from usearch.index import Index

    result = Result("usearch f32 (library only)")
    index = Index(
        ndim=DIM, metric="cos", dtype="f32", connectivity=16, expansion_add=128, expansion_search=64
    )
    keys = data.ids.astype(np.uint64)
    t = time.perf_counter()
    index.add(keys, data.vectors)
    result.build_s = time.perf_counter() - t
    result.add_per_s = len(data.ids) / result.build_s

    def search_one(q: np.ndarray) -> np.ndarray:
        return np.asarray(index.search(q, K, threads=1).keys, dtype=np.int64)

    measure(result, search_one, data)
    sweep(result, lambda ef: setattr(index, "expansion_search", ef), search_one, data)
    path = workdir / "usearch-library.usearch"
    index.save(str(path))
    result.file_mb = path.stat().st_size / 1e6
    t = time.perf_counter()
    Index.restore(str(path), view=True)
    result.open_s = time.perf_counter() - t
    vectors, ids = probe_data()
    small = Index(ndim=DIM, metric="cos")
    small.add(ids.astype(np.uint64), vectors)
    small.remove(5)
    result.remove = yes_no(5 not in small.search(vectors[5], K).keys)
    small.save(str(workdir / "usearch-probe.usearch"))
    mapped = Index.restore(str(workdir / "usearch-probe.usearch"), view=True)
    assert mapped is not None
    same = (mapped.search(vectors[:20], K).keys == small.search(vectors[:20], K).keys).all()
    result.mmap = yes_no(bool(same), "yes (view)")
    has_filter = "filter" in inspect.signature(Index.search).parameters
    result.filter = "yes" if has_filter else "no (not in Python API)"
    result.note = "open = view, no checks"
    return result


# --- hnswlib ----------------------------------------------------------------------------


def hnswlib_backend(data: Data, workdir: Path) -> Result:
    result = Result("hnswlib M=16")
    try:
        import hnswlib
    except ImportError:
        result.note = "skipped: not installed"
        return result
    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(
        max_elements=len(data.ids), ef_construction=128, M=16, allow_replace_deleted=True
    )
    t = time.perf_counter()
    index.add_items(data.vectors, data.ids, num_threads=os.cpu_count() or 1)
    result.build_s = time.perf_counter() - t
    result.add_per_s = len(data.ids) / result.build_s
    index.set_ef(64)
    index.set_num_threads(1)

    def search_one(q: np.ndarray) -> np.ndarray:
        return np.asarray(index.knn_query(q, k=K, num_threads=1)[0][0], dtype=np.int64)

    measure(result, search_one, data)
    sweep(result, index.set_ef, search_one, data)
    path = workdir / "hnswlib.bin"
    index.save_index(str(path))
    result.file_mb = path.stat().st_size / 1e6
    t = time.perf_counter()
    hnswlib.Index(space="ip", dim=DIM).load_index(str(path))
    result.open_s = time.perf_counter() - t
    result.remove, result.mmap, result.filter = "yes (mark_deleted)", "no", "yes (callable)"
    return result


# --- output -----------------------------------------------------------------------------

COLUMNS = [
    ("backend", "backend"),
    ("build_s", "build s"),
    ("add_per_s", "add /s"),
    ("p50_ms", "p50 ms"),
    ("recall10", "recall@10"),
    ("mates10", "mates@10"),
    ("self1", "self@1"),
    ("file_mb", "file MB"),
    ("open_s", "open s"),
    ("remove", "remove"),
    ("mmap", "mmap"),
    ("filter", "filter"),
    ("note", "note"),
]


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "add_per_s":
        return f"{value:,.0f}"
    if key == "p50_ms":
        return f"{value:.3f}"
    if key in ("recall10", "mates10", "self1"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


Table = tuple[str, list[str], list[list[str]]]


def tables(results: list[Result], title: str) -> list[Table]:
    """The main table, and the search-breadth sweep of the graph indexes."""
    main = [[cell(k, asdict(r)[k]) for k, _ in COLUMNS] for r in results]
    swept = [
        [r.backend, str(ef), cell("p50_ms", p50), cell("recall10", rec), cell("mates10", mates)]
        for r in results
        for ef, (p50, rec, mates) in r.sweep.items()
    ]
    return [
        (title, [h for _, h in COLUMNS], main),
        ("Search breadth (ef / expansion_search), one thread, k=10", SWEEP_COLUMNS, swept),
    ]


SWEEP_COLUMNS = ["backend", "ef", "p50 ms", "recall@10", "mates@10"]


def markdown(tabs: list[Table]) -> str:
    out = []
    for title, headers, rows in tabs:
        out += [title, "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)


def rich_tables(tabs: list[Table]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console(width=200)
    for title, headers, rows in tabs:
        table = RichTable(title=title)
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="gallery size (default 200000)")
    parser.add_argument("--queries", type=int, default=1000, help="single queries to time")
    parser.add_argument("--uniform", action="store_true", help="uniform random vectors")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print results as JSON")
    out.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    kind = "uniform" if args.uniform else "face-like"
    say(f"drawing {args.n:,} {kind} vectors and {args.queries:,} queries; exact top-{K}")
    data = make_data(args.n, args.queries, args.uniform)
    runs: list[tuple[str, Callable[[Path], Result]]] = [
        ("FAISS flat", lambda d: faiss_backend("flat", data, d)),
        ("facetrace exact", lambda d: facetrace_backend("facetrace exact", "exact", data, d)),
        ("FAISS HNSW", lambda d: faiss_backend("hnsw", data, d)),
        ("usearch library", lambda d: usearch_library(data, d)),
    ]
    runs += [
        (
            f"usearch {dtype}",
            lambda d, dtype=dtype: facetrace_backend(  # type: ignore[misc]
                f"facetrace usearch {dtype}", "usearch", data, d, dtype=dtype
            ),
        )
        for dtype in ("f32", "f16", "i8")
    ]
    runs += [
        ("hnswlib", lambda d: hnswlib_backend(data, d)),
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="facetrace-bench-") as tmp:
        for name, run in runs:
            say(f"{name} ...")
            t = time.perf_counter()
            results.append(run(Path(tmp)))
            say(f"{name} done in {time.perf_counter() - t:.1f} s")
    title = f"{args.n:,} x {DIM} {kind} vectors, {args.queries:,} queries, {os.cpu_count()} cores"
    if args.json:
        print(json.dumps({"title": title, "results": [asdict(r) for r in results]}, indent=1))
    elif args.markdown:
        print(markdown(tables(results, title)))
    else:
        rich_tables(tables(results, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m facetrace.evaluation.synthetic fit|describe``: refit the generator's
statistics on an evaluation cache, or print a synthetic gallery's numbers beside the
real ones they were fitted on (``facetrace.evaluation.synthetic``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facetrace.evaluation.synthetic import (
    STATS_PATH,
    EmbeddingStats,
    Plan,
    counts_from,
    describe,
    fill,
    fit_cache,
    load_stats,
    rank1,
    save_stats,
)


def _report(stats: EmbeddingStats, seed: int) -> None:
    """Print the real numbers beside those of a synthetic gallery of the same structure."""
    histogram = stats.info.get("faces_per_person")
    counts = counts_from(histogram, seed) if histogram else np.full(5000, 4, dtype=np.int64)
    p = Plan(counts, seed, "dlib", stats)
    vectors = np.empty((p.n_faces, 128), dtype=np.float32)
    fill(p, vectors)
    syn = describe(vectors, p.labels(), seed)
    ref = stats.info.get("reference", {})
    print(f"{p.n_faces:,} faces of {p.n_identities:,} identities {'real':>10} {'synthetic':>10}")
    for key, value in syn.items():
        for i, v in enumerate(value[:4] if isinstance(value, list) else [value]):
            name = f"{key}[{i}]" if isinstance(value, list) else key
            real = ref.get(key, [float("nan")] * 4)[i] if isinstance(value, list) else ref.get(key)
            print(f"{name:34} {float('nan') if real is None else real:10.5g} {v:10.5g}")
    ident = stats.info.get("identification", {})
    gallery, mated = ident.get("gallery", 4909), ident.get("mated_searches", 4203)
    syn_rank1 = rank1(stats, gallery, mated, seed)
    print(f"{'rank-1 (1:N, exact)':34} {ident.get('rank1', float('nan')):10.4f} {syn_rank1:10.4f}")
    print(f"  gallery of {gallery:,} identities with one face each, {mated:,} mated probes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facetrace.evaluation.synthetic")
    sub = parser.add_subparsers(dest="command", required=True)
    fit_p = sub.add_parser("fit", help="fit the statistics on an evaluation cache (.npz)")
    fit_p.add_argument("cache", type=Path)
    fit_p.add_argument("--out", type=Path, default=STATS_PATH)
    fit_p.add_argument("--clusters", type=int, default=8)
    fit_p.add_argument("--seed", type=int, default=0)
    show = sub.add_parser("describe", help="compare a synthetic gallery with the real numbers")
    show.add_argument("--stats", type=Path, default=STATS_PATH)
    show.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "fit":
        stats = fit_cache(args.cache, clusters=args.clusters, seed=args.seed)
        save_stats(stats, args.out)
        print(f"wrote {args.out} (fitted on {stats.info['photos']:,} photos)")
        stats = load_stats(args.out)
    else:
        stats = load_stats(args.stats)
    _report(stats, args.seed)
    return 0

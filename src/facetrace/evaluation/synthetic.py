"""Synthetic face embeddings for benchmarks: galleries of identities, shaped like dlib's.

Face embeddings are not uniform random vectors, and ANN indexes behave very differently on
the two, so benchmark galleries follow statistics fitted on real dlib vectors (LFW). Mode
``"dlib"`` draws, for identity ``i`` and its face ``j``::

    face = normalise(mean + centre[c_i] + spread_i + scale_ij * noise_ij)

- ``mean``: the global mean (of person means): every dlib face has cosine ~0.92 to it.
- ``centre[c_i] + spread_i``: the identity. ``c_i`` is one of a few clusters of identity
  means (k-means, fitted) and ``spread_i ~ N(0, S)`` with ``S`` the covariance of person
  means around their cluster, corrected for the within-person noise left in a mean of few
  photos (``cov(mean of n photos) = S + W / n``). Together they reproduce the spectrum of
  identity means; the clusters make near neighbours as close as real people are (without
  them, 1:N identification is far easier than on real faces).
- ``noise_ij ~ N(0, W)``: ``W`` is the pooled within-person covariance (residuals around
  each person's mean). ``scale_ij**2`` is drawn from the fitted distribution of per-face
  residual size (mean 1): real photos have heavy tails (profiles, blur, age).

Mode ``"uniform"`` draws every vector uniformly on the sphere, independently: the worst
case for ANN indexes. Identities then carry no signal and mated probes cannot be found.

The fitted statistics ship as ``facetrace/data/dlib-embedding-stats.npz`` (float32
arrays plus a JSON ``info`` record: what they were fitted on, when, and reference numbers
measured on the real vectors). Refit them from any evaluation cache with
``python -m facetrace.evaluation.synthetic fit CACHE.npz``.

Reproducibility: everything is a function of the seed. Random numbers come from PCG64
streams (one per purpose) read by random access: row ``r`` of a stream is uniforms
``[130 r, 130 r + 130)`` (``advance``), turned into normals by Box-Muller. Rows are
computed in fixed tiles of 4,096, so a gallery is bit-identical however it is chunked,
and a 10-million-face gallery can be written chunk by chunk into a memory-mapped file.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

STATS_PATH = Path(__file__).parent.parent / "data" / "dlib-embedding-stats.npz"
MODES = ("dlib", "uniform")
_ROW = 130  # uniforms per row: 128 for the normals, one for a choice, one spare
_TILE = 4096  # rows per tile; tiles are the unit of computation (bit-identical results)
_COUNTS, _MEANS, _FACES, _PROBE_CHOICE, _PROBE_FACES, _NONMATED = range(6)  # stream keys

FacesPerIdentity = int | tuple[int, int]


@dataclass(frozen=True)
class EmbeddingStats:
    """Fitted statistics of real face embeddings (eigenvalues descending, vectors as columns)."""

    mean: np.ndarray  # (d,) global mean of person means
    centres: np.ndarray  # (k, d) cluster centres of identity means, relative to ``mean``
    weights: np.ndarray  # (k,) share of identities in each cluster
    spread_vals: np.ndarray  # (d,) covariance of identity means around their centre
    spread_vecs: np.ndarray  # (d, d)
    within_vals: np.ndarray  # (d,) pooled within-person covariance
    within_vecs: np.ndarray  # (d, d)
    face_scale: np.ndarray  # (q,) quantiles of a face's variance scale (mean 1)
    between_vals: np.ndarray  # (d,) spectrum of identity means (centres and spread)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def _factor(self, vals: np.ndarray, vecs: np.ndarray) -> np.ndarray:
        """``F`` with ``z @ F ~ N(0, V diag(vals) V^T)`` for standard normal rows ``z``."""
        return np.asarray(np.sqrt(np.clip(vals, 0, None))[:, None] * vecs.T, dtype=np.float32)


_ARRAYS = tuple(f.name for f in fields(EmbeddingStats) if f.name != "info")


def load_stats(path: Path | None = None) -> EmbeddingStats:
    """The statistics saved at ``path`` (default: the ones shipped with facetrace)."""
    with np.load(path or STATS_PATH, allow_pickle=False) as f:
        arrays = {k: np.asarray(f[k], dtype=np.float64) for k in _ARRAYS}
        info = json.loads(str(f["info"]))
    return EmbeddingStats(**arrays, info=info)


def save_stats(stats: EmbeddingStats, path: Path) -> None:
    arrays: dict[str, Any] = {k: np.asarray(getattr(stats, k), np.float32) for k in _ARRAYS}
    arrays["info"] = np.array(json.dumps(stats.info, indent=1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


# --- fitting --------------------------------------------------------------------------


@dataclass(frozen=True)
class Moments:
    """First and second moments of labelled vectors (people with at least two photos)."""

    mean: np.ndarray  # mean of the person means
    between: np.ndarray  # covariance of person means, less the noise of a mean of n photos
    within: np.ndarray  # pooled covariance of residuals around each person's mean
    person_means: np.ndarray
    person_counts: np.ndarray
    residuals: np.ndarray  # (rows, d), each scaled by sqrt(n / (n - 1)) of its person
    noise_share: float  # mean of 1/n over people: the within noise left in their means


def moments(vectors: np.ndarray, labels: np.ndarray) -> Moments:
    """Moments of ``vectors`` grouped by ``labels``; people with one photo are left out."""
    x = np.asarray(vectors, dtype=np.float64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = counts[inverse] >= 2
    _, lab = np.unique(inverse[keep], return_inverse=True)
    x = x[keep]
    if lab.size == 0 or lab.max() < 1:
        raise ValueError("need at least two people with two or more photos each")
    order = np.argsort(lab, kind="stable")
    n = np.bincount(lab)
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    means = np.add.reduceat(x[order], starts, axis=0) / n[:, None]
    res = x - means[lab]
    within = res.T @ res / (len(x) - len(n))
    mu = means.mean(axis=0)
    dm = means - mu
    noise = float(np.mean(1.0 / n))
    between = dm.T @ dm / (len(n) - 1) - noise * within
    res *= np.sqrt(n[lab] / (n[lab] - 1.0))[:, None]
    return Moments(mu, between, within, means, n, res, noise)


def _eig(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    return np.clip(vals[::-1], 0, None), vecs[:, ::-1]


def _kmeans(x: np.ndarray, k: int, seed: int, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(centres, assignment) by Lloyd's algorithm from a k-means++ start."""
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    d2 = np.sum((x - centres[0]) ** 2, axis=1)
    for _ in range(1, k):
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())])
        d2 = np.minimum(d2, np.sum((x - centres[-1]) ** 2, axis=1))
    c = np.array(centres)
    assign = np.zeros(len(x), dtype=np.int64)
    for _ in range(iters):
        dist = np.sum(x**2, 1)[:, None] - 2 * x @ c.T + np.sum(c**2, 1)[None, :]
        new = np.argmin(dist, axis=1)
        for j in range(k):
            if np.any(new == j):
                c[j] = x[new == j].mean(axis=0)
        if np.array_equal(new, assign):
            break
        assign = new
    return c, assign


def _scale_quantiles(m: Moments, within_vals: np.ndarray, within_vecs: np.ndarray) -> np.ndarray:
    """Quantiles of each face's residual variance relative to ``W`` (mean 1).

    The whitened squared residual of a face is its scale times a chi-square/d variable;
    the chi-square's share of the log-variance is taken out (shrinking the logs towards
    their mean), so the fitted scales are not wider than the real ones.
    """
    used = within_vals > within_vals[0] * 1e-6
    z = m.residuals @ within_vecs[:, used] / np.sqrt(within_vals[used])
    d = int(used.sum())
    logs = np.log(np.sum(z**2, axis=1) / d)
    half = d / 2
    chi_var = 1 / half + 1 / (2 * half**2) + 1 / (6 * half**3)  # trigamma(d/2)
    shrink = math.sqrt(max(logs.var() - chi_var, 0.0) / logs.var())
    scale = np.exp(logs.mean() + (logs - logs.mean()) * shrink)
    q = np.quantile(scale, np.linspace(0, 1, 257))
    return q / np.mean((q[1:] + q[:-1]) / 2)  # mean of the piecewise-linear law is 1


def fit(
    vectors: np.ndarray, labels: np.ndarray, *, clusters: int = 8, seed: int = 0
) -> EmbeddingStats:
    """Fit the model of the module docstring to unit ``vectors`` of labelled people."""
    m = moments(vectors, labels)
    centres, assign = _kmeans(m.person_means - m.mean, clusters, seed)
    around = m.person_means - m.mean - centres[assign]
    spread = around.T @ around / (len(around) - clusters) - m.noise_share * m.within
    within_vals, within_vecs = _eig(m.within)
    spread_vals, spread_vecs = _eig(spread)
    return EmbeddingStats(
        mean=m.mean,
        centres=centres,
        weights=np.bincount(assign, minlength=clusters) / len(assign),
        spread_vals=spread_vals,
        spread_vecs=spread_vecs,
        within_vals=within_vals,
        within_vecs=within_vecs,
        face_scale=_scale_quantiles(m, within_vals, within_vecs),
        between_vals=_eig(m.between)[0],
        info={"clusters": clusters, "seed": seed},
    )


def describe(vectors: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Summary numbers to compare real and synthetic vectors.

    Same-person cosines: consecutive pairs among each person's first 10 photos; different
    people: 100,000 random pairs; cosine to the normalised mean of all vectors; the
    leading eigenvalues of the (corrected) covariance of identity means and of ``W``.
    Neighbourhoods (what makes ANN search hard; they depend on the gallery's size and
    faces per person): for 1,000 faces searched among the others, the median cosine of
    the 10th nearest and the local intrinsic dimension (maximum likelihood, 10 nearest).
    """
    x = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels)
    _, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    grouped = inverse[order]
    row = np.arange(len(x))
    starts = np.concatenate([[0], np.flatnonzero(np.diff(grouped)) + 1])
    rank = row - starts[np.searchsorted(starts, row, side="right") - 1]
    next_same = np.concatenate([grouped[1:] == grouped[:-1], [False]])
    pick = row[(rank % 2 == 0) & (rank < 9) & next_same]
    a, b = order[pick], order[pick + 1]
    same = np.sum(x[a] * x[b], axis=1)
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(x), (2, 100_000))
    differ = inverse[i] != inverse[j]
    diff = np.sum(x[i[differ]] * x[j[differ]], axis=1)
    centre = x.mean(axis=0)
    m = moments(x, labels)
    return {
        "faces": len(x),
        "identities": int(inverse.max() + 1),
        "median_same_cos": float(np.median(same)),
        "median_diff_cos": float(np.median(diff)),
        "median_cos_to_mean": float(np.median(x @ (centre / np.linalg.norm(centre)))),
        "between_eigvals": [float(v) for v in _eig(m.between)[0][:8]],
        "within_eigvals": [float(v) for v in _eig(m.within)[0][:8]],
        **_neighbourhoods(x, rng),
    }


def _neighbourhoods(x: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    queries = rng.choice(len(x), min(1000, len(x) // 2), replace=False)
    rest = np.ones(len(x), dtype=bool)
    rest[queries] = False
    cos = x[queries] @ x[rest].T
    top = -np.sort(-np.partition(cos, -10, axis=1)[:, -10:], axis=1)  # 10 nearest, best first
    dist = np.sqrt(np.maximum(2 - 2 * top, 1e-12))  # Euclidean, for unit vectors
    lid = -1 / np.mean(np.log(dist[:, :9] / dist[:, 9:]), axis=1)
    return {"median_10th_nn_cos": float(np.median(top[:, 9])), "median_lid": float(np.median(lid))}


# --- generation -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a gallery will hold: how many faces each identity has, and how to draw them."""

    counts: np.ndarray  # faces of each identity (int64, >= 1)
    seed: int
    mode: str
    stats: EmbeddingStats | None  # None in uniform mode

    @property
    def n_identities(self) -> int:
        return int(self.counts.size)

    @property
    def n_faces(self) -> int:
        return int(self.offsets[-1])

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)])

    def labels(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Identity of faces ``start`` to ``stop`` (int64)."""
        stop = self.n_faces if stop is None else stop
        return np.searchsorted(self.offsets, np.arange(start, stop), side="right") - 1


def _draw_counts(n: int, per: FacesPerIdentity, seed: int) -> np.ndarray:
    lo, hi = (per, per) if isinstance(per, int) else per
    if lo < 1 or hi < lo:
        raise ValueError(f"faces per identity must be >= 1 and low <= high, not {per!r}")
    if lo == hi:
        return np.full(n, lo, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_COUNTS,))))
    return rng.integers(lo, hi + 1, n, dtype=np.int64)  # a prefix does not depend on n


def plan(
    n_identities: int,
    faces_per_identity: FacesPerIdentity = 4,
    seed: int = 0,
    mode: str = "dlib",
    stats: EmbeddingStats | None = None,
) -> Plan:
    """A gallery of ``n_identities``, each with a fixed number of faces or one drawn
    uniformly from an inclusive ``(low, high)`` range (low >= 1)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if n_identities < 1 or seed < 0:
        raise ValueError("need at least one identity and a non-negative seed")
    counts = _draw_counts(n_identities, faces_per_identity, seed)
    return Plan(counts, seed, mode, None if mode == "uniform" else stats or load_stats())


def plan_faces(
    n_faces: int,
    faces_per_identity: FacesPerIdentity = 4,
    seed: int = 0,
    mode: str = "dlib",
    stats: EmbeddingStats | None = None,
) -> Plan:
    """Like ``plan``, with exactly ``n_faces`` faces (the last identity may have fewer)."""
    low = faces_per_identity if isinstance(faces_per_identity, int) else faces_per_identity[0]
    full = plan(n_faces // max(low, 1) + 1, faces_per_identity, seed, mode, stats)
    last = int(np.searchsorted(full.offsets, n_faces, side="left"))
    counts = full.counts[:last].copy()
    counts[-1] -= int(full.offsets[last]) - n_faces
    return Plan(counts, seed, mode, full.stats)


def _uniforms(seed: int, key: tuple[int, ...], start: int, n: int) -> np.ndarray:
    """Rows ``start`` to ``start + n`` of a stream: (n, 130) uniforms in [0, 1)."""
    bits = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key))
    bits.advance(start * _ROW)  # one 64-bit draw per double
    return np.random.Generator(bits).random((n, _ROW))


def _normals(u: np.ndarray) -> np.ndarray:
    """(n, 128) standard normals from the first 128 uniforms of each row (Box-Muller).

    Computed in float32 (six times faster here); ``1 - u`` is taken in float64 first so
    it stays in (0, 1] and the logarithm stays finite.
    """
    radius = np.sqrt(-2.0 * np.log((1.0 - u[:, :64]).astype(np.float32)))
    angle = np.float32(2 * np.pi) * u[:, 64:128].astype(np.float32)
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def _check_dim(stats: EmbeddingStats) -> None:
    if stats.dim != 128:
        raise ValueError(f"the generator draws 128-d vectors, not {stats.dim}-d")


def _means_from(stats: EmbeddingStats, u: np.ndarray) -> np.ndarray:
    """Identity offsets from the global mean (float32), one per row of uniforms."""
    cluster = np.searchsorted(np.cumsum(stats.weights), u[:, 128] * stats.weights.sum())
    cluster = np.minimum(cluster, len(stats.weights) - 1)
    spread = _normals(u) @ stats._factor(stats.spread_vals, stats.spread_vecs)
    return stats.centres[cluster].astype(np.float32) + spread


def _faces_from(stats: EmbeddingStats, u: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Unit faces (float32) around identity offsets ``means``, one per row of uniforms."""
    grid = np.linspace(0, 1, len(stats.face_scale))
    scale = np.sqrt(np.interp(u[:, 128], grid, stats.face_scale)).astype(np.float32)
    noise = _normals(u) @ stats._factor(stats.within_vals, stats.within_vecs)
    x = stats.mean.astype(np.float32) + means + scale[:, None] * noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _tiled(rows: Callable[[int, int], np.ndarray], start: int, stop: int, end: int) -> np.ndarray:
    """Rows ``start:stop`` computed as whole tiles ``[t, min(t + TILE, end))``."""
    first = start // _TILE * _TILE
    parts = [rows(t, min(t + _TILE, end)) for t in range(first, stop, _TILE)]
    return np.concatenate(parts)[start - first : stop - first]


def _identity_means(p: Plan, start: int, stop: int) -> np.ndarray:
    stats = p.stats
    assert stats is not None
    return _tiled(
        lambda a, b: _means_from(stats, _uniforms(p.seed, (_MEANS,), a, b - a)),
        start,
        stop,
        1 << 62,
    )


def _face_rows(p: Plan, start: int, stop: int) -> np.ndarray:
    """Faces ``start`` to ``stop`` of the gallery (float32 unit rows)."""
    stats = p.stats
    if stats is None:

        def uniform(a: int, b: int) -> np.ndarray:
            z = _normals(_uniforms(p.seed, (_FACES,), a, b - a))
            return z / np.linalg.norm(z, axis=1, keepdims=True)

        return _tiled(uniform, start, stop, p.n_faces)
    first = start // _TILE * _TILE
    labels = p.labels(first, min(-(-stop // _TILE) * _TILE, p.n_faces))
    means = _identity_means(p, int(labels[0]), int(labels[-1]) + 1)  # shared by the tiles

    def dlib(a: int, b: int) -> np.ndarray:
        u = _uniforms(p.seed, (_FACES,), a, b - a)
        return _faces_from(stats, u, means[labels[a - first : b - first] - labels[0]])

    return _tiled(dlib, start, stop, p.n_faces)


def fill(
    p: Plan,
    out: np.ndarray,
    *,
    start: int = 0,
    chunk: int = 16 * _TILE,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write faces ``start`` to ``start + len(out)`` of the gallery into ``out``.

    ``out`` may be a memory-mapped array; ``chunk`` rows are computed at a time (a multiple
    of 4,096 wastes nothing). The result does not depend on ``chunk``. ``progress`` is
    called with the number of rows written so far.
    """
    stop = start + out.shape[0]
    if start < 0 or stop > p.n_faces:
        raise ValueError(f"rows {start}:{stop} are outside the gallery's {p.n_faces} faces")
    if p.stats is not None:
        _check_dim(p.stats)
    for a in range(start, stop, chunk):
        b = min(a + chunk, stop)
        out[a - start : b - start] = _face_rows(p, a, b)
        if progress is not None:
            progress(b - start)


def generate(
    n_identities: int,
    faces_per_identity: FacesPerIdentity = 4,
    seed: int = 0,
    mode: str = "dlib",
    dtype: Any = np.float32,
    stats: EmbeddingStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors (n, 128), identity labels (n,) int64) of a new synthetic gallery."""
    p = plan(n_identities, faces_per_identity, seed, mode, stats)
    out = np.empty((p.n_faces, 128), dtype=dtype)
    fill(p, out)
    return out, p.labels()


def generate_file(p: Plan, path: Path, **fill_options: Any) -> np.ndarray:
    """Write the gallery of ``p`` as a float32 ``.npy`` at ``path``; return it memory-mapped."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(p.n_faces, 128))
    fill(p, out, **fill_options)
    out.flush()
    return np.load(path, mmap_mode="r")


@dataclass(frozen=True)
class Probes:
    """Search photos: new faces of gallery identities (mated) and of strangers."""

    vectors: np.ndarray  # (m, 128) unit float32: the mated ones first
    identities: np.ndarray  # gallery identity of each probe; -1 for a non-mated one

    @property
    def mated(self) -> np.ndarray:
        return self.identities >= 0


def probes(p: Plan, n_mated: int, n_nonmated: int = 0, seed: int = 0) -> Probes:
    """New photos of ``n_mated`` random gallery identities and of ``n_nonmated`` people
    who are not in the gallery. Different ``seed``s give different probes."""
    choice = np.random.SeedSequence(p.seed, spawn_key=(_PROBE_CHOICE, seed))
    who = np.random.Generator(np.random.PCG64(choice)).integers(0, p.n_identities, n_mated)
    u = _uniforms(p.seed, (_PROBE_FACES, seed), 0, n_mated + n_nonmated)
    identities = np.concatenate([who, np.full(n_nonmated, -1)]).astype(np.int64)
    if p.stats is None:
        z = _normals(u)
        return Probes(z / np.linalg.norm(z, axis=1, keepdims=True), identities)
    mean_rows = [_uniforms(p.seed, (_MEANS,), int(i), 1) for i in who]
    mean_rows.append(_uniforms(p.seed, (_NONMATED, seed), 0, n_nonmated))
    means = _means_from(p.stats, np.concatenate(mean_rows))
    return Probes(_faces_from(p.stats, u, means), identities)


def rank1(
    stats: EmbeddingStats | None = None, n_gallery: int = 4909, n_probes: int = 4203, seed: int = 0
) -> float:
    """Exact-search rank-1 hit rate with one enrolled face per identity (LFW-sized default)."""
    p = plan(n_gallery, 1, seed, "dlib", stats)
    gallery = np.empty((p.n_faces, 128), dtype=np.float32)
    fill(p, gallery)
    pr = probes(p, n_probes, 0, seed)
    top = np.argmax(pr.vectors @ gallery.T, axis=1)
    return float(np.mean(p.labels()[top] == pr.identities))


# --- fitting from an evaluation cache, and the command line ---------------------------


def fit_cache(path: Path, *, clusters: int = 8, seed: int = 0) -> EmbeddingStats:
    """Fit on the ``plain`` vectors of an evaluation cache (person = parent folder name),
    recording what was fitted and reference numbers of the real vectors in ``info``."""
    from facetrace import __version__
    from facetrace.evaluation import identify
    from facetrace.evaluation.embeddings import EvalFaces

    with np.load(path, allow_pickle=False) as f:
        keys, plain, found_by = f["keys"], f["plain"], f["found_by"]
        faces = EvalFaces(
            paths=[str(k).split("\0")[0] for k in keys],
            plain=plain,
            flip=f["flip"],
            found_by=[str(s) for s in found_by],
            face_px=f["face_px"],
            sharpness=f["sharpness"],
        )
    ok = found_by != "error"
    people = np.array([Path(p).parent.name for p in faces.paths])
    stats = fit(plain[ok], people[ok], clusters=clusters, seed=seed)
    real = identify.evaluate(faces, identify.split(faces.paths, seed=0), "plain")
    m = moments(plain[ok], people[ok])
    stats.info.update(
        fitted_on=str(Path(path).name),
        fitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        facetrace_version=__version__,
        vectors="plain dlib_resnet_v1 descriptors (no mirror augmentation)",
        person="parent folder of each photo",
        photos=int(ok.sum()),
        people=len(set(people[ok].tolist())),
        people_with_2_or_more=len(m.person_counts),
        faces_per_person=_histogram(people[ok]),
        reference=describe(plain[ok], people[ok], seed),
        identification={
            "protocol": "facetrace.evaluation.identify, seed 0, one enrolment photo, plain",
            "gallery": real["gallery_size"],
            "mated_searches": real["mated_searches"],
            "rank1": real["rank1"],
        },
    )
    return stats


def _histogram(labels: np.ndarray) -> dict[str, int]:
    """{faces: people with that many faces}."""
    sizes, people = np.unique(np.unique(labels, return_counts=True)[1], return_counts=True)
    return {str(int(a)): int(b) for a, b in zip(sizes, people, strict=True)}


def counts_from(histogram: dict[str, int], seed: int = 0) -> np.ndarray:
    """Faces per identity (shuffled) with the distribution of ``faces_per_person``."""
    counts = np.repeat([int(k) for k in histogram], list(histogram.values()))
    return np.random.default_rng(seed).permutation(counts).astype(np.int64)


if __name__ == "__main__":
    from facetrace.evaluation.synthetic_cli import main

    sys.exit(main())

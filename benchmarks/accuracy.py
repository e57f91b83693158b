"""Accuracy against the ``face_recognition`` package, same dlib model, same photos, one run.

The peer runs with its defaults: ``face_locations`` (HOG, upsample 1), ``face_encodings``
(5 landmarks, no jitter), Euclidean distance, tolerance 0.6; of several faces the one
nearest the centre is used; a photo where it finds no face cannot match (its pairs are
"different", its searches return nothing). facetrace runs as ``facetrace eval`` does
(missed faces: CNN box, else central box), plain and with mirror augmentation (flip).

On LFW (``FACETRACE_FACES/lfw``): View 2 (10 folds, threshold chosen on 9) and the 1:N
split of ``facetrace eval identify`` (seed 0). Prints both side by side.

    .venv/bin/python benchmarks/accuracy.py [--data .eval-data] [--workers 2]

Embeddings of both are cached in the data directory, so a second run takes seconds.
"""

from __future__ import annotations

import argparse
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from facetrace.evaluation import identify, metrics
from facetrace.evaluation.embeddings import embed_photos
from facetrace.evaluation.pairs import read_pairs
from facetrace.evaluation.run import photos_in
from facetrace.evaluation.verify import VARIANTS, pair_scores
from facetrace.settings import Settings

FACES = Path(
    os.environ.get("FACETRACE_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces")
)
PEER_TOLERANCE = 0.6


def peer_one(path: str) -> tuple[str, np.ndarray | None]:
    import face_recognition

    img = face_recognition.load_image_file(path)
    boxes = face_recognition.face_locations(img)
    if not boxes:
        return path, None
    h, w = img.shape[:2]
    i = min(
        range(len(boxes)),
        key=lambda j: (
            ((boxes[j][1] + boxes[j][3]) / 2 - w / 2) ** 2
            + ((boxes[j][0] + boxes[j][2]) / 2 - h / 2) ** 2
        ),
    )
    return path, face_recognition.face_encodings(img, [boxes[i]])[0]


def peer_encodings(paths: list[str], data: Path, workers: int) -> dict[str, np.ndarray | None]:
    cache = data / "eval-cache" / "peer-face_recognition.npz"
    known: dict[str, np.ndarray | None] = {}
    if cache.is_file():
        z = np.load(cache)
        known = {
            str(p): (v if ok else None)
            for p, v, ok in zip(z["paths"], z["enc"], z["ok"], strict=True)
        }
    todo = [p for p in paths if p not in known]
    if todo:
        with Pool(workers) as pool:
            for p, enc in pool.imap(peer_one, todo, chunksize=16):
                known[p] = enc
        cache.parent.mkdir(parents=True, exist_ok=True)
        keys = list(known)
        np.savez(
            cache,
            paths=np.array(keys),
            ok=np.array([known[k] is not None for k in keys]),
            enc=np.array([known[k] if known[k] is not None else np.zeros(128) for k in keys]),
        )
    return {p: known[p] for p in paths}


def peer_verify(enc: dict[str, np.ndarray | None], pairs) -> dict[str, float]:  # type: ignore[no-untyped-def]
    dist = np.array(
        [
            np.linalg.norm(enc[a] - enc[b]) if enc[a] is not None and enc[b] is not None else np.inf
            for a, b in zip(pairs.a, pairs.b, strict=True)
        ]
    )
    score = -dist
    k = metrics.kfold_accuracy(score, pairs.same, pairs.folds)
    finite = np.where(np.isfinite(score), score, -10.0)
    return {
        "mean_accuracy": k["mean_accuracy"],
        "std_accuracy": k["std_accuracy"],
        "accuracy_at_tolerance": metrics.accuracy_at(score, pairs.same, -PEER_TOLERANCE),
        "eer": metrics.eer(finite[pairs.same], finite[~pairs.same])[0],
        "tar_at_far_0.001": metrics.tar_at_far(finite[pairs.same], finite[~pairs.same], 1e-3)[0],
    }


def peer_identify(enc: dict[str, np.ndarray | None], sp: identify.Split) -> dict[str, float]:
    names = [n for n, ps in sp.enrolled.items() if enc[ps[0]] is not None]
    pos = {n: i for i, n in enumerate(names)}
    gallery = np.stack([enc[sp.enrolled[n][0]] for n in names])

    def top(vec: np.ndarray | None, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        if vec is None:
            return np.array([], int), np.array([])
        d = np.linalg.norm(gallery - vec, axis=1)
        idx = np.argsort(d)[:k]
        return idx, -d[idx]

    ranks, rank1 = [], []
    for p, n in sp.mated:
        idx, sc = top(enc[p])
        r = int(np.nonzero(idx == pos[n])[0][0]) + 1 if n in pos and (idx == pos[n]).any() else 0
        ranks.append(r)
        rank1.append(sc[0] if r == 1 else -np.inf)
    nonmated = np.array(
        [top(enc[p], 1)[1][0] if enc[p] is not None else -np.inf for p in sp.nonmated]
    )
    curve = metrics.cmc(np.array(ranks), 10)
    out = {"rank1": curve[0], "rank10": curve[9]}
    for f in identify.FPIRS:
        out[f"fnir_at_fpir_{f:g}"] = metrics.fnir_at_fpir(np.array(rank1), nonmated, f)[0]
    out["fpir_at_tolerance"] = float((nonmated >= -PEER_TOLERANCE).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(".eval-data"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    lfw = FACES / "lfw"
    photos = photos_in(lfw / "images")
    settings = Settings.load(env={}, data_dir=args.data)
    ours = embed_photos(photos, settings, workers=args.workers)
    peer = peer_encodings(photos, args.data, args.workers)
    pairs = read_pairs(lfw / "pairs.txt", lfw / "images")
    view2 = pairs.photos()
    print(
        f"LFW View 2: {len(pairs)} pairs, {len(view2)} photos; "
        f"peer found no face in {sum(peer[p] is None for p in view2)}; facetrace's HOG in "
        f"{sum(ours.found_by[ours.row()[p]] != 'hog' for p in view2)} (then CNN or central box)"
    )
    rows = {"face_recognition 1.3.0": peer_verify(peer, pairs)}
    for v in VARIANTS:
        s = pair_scores(ours, pairs, v)
        k = metrics.kfold_accuracy(s, pairs.same, pairs.folds)
        rows[f"facetrace {v}"] = {
            "mean_accuracy": k["mean_accuracy"],
            "std_accuracy": k["std_accuracy"],
            "accuracy_at_tolerance": float("nan"),
            "eer": metrics.eer(s[pairs.same], s[~pairs.same])[0],
            "tar_at_far_0.001": metrics.tar_at_far(s[pairs.same], s[~pairs.same], 1e-3)[0],
        }
    cols = ["mean_accuracy", "std_accuracy", "accuracy_at_tolerance", "eer", "tar_at_far_0.001"]
    print(f"{'verification':28}" + "".join(f"{c:>24}" for c in cols))
    for name, r in rows.items():
        print(f"{name:28}" + "".join(f"{r[c]:24.4f}" for c in cols))

    sp = identify.split(photos, 0)
    print(
        f"\nLFW 1:N (seed 0): {len(sp.enrolled)} enrolled, {len(sp.mated)} mated and "
        f"{len(sp.nonmated)} non-mated searches"
    )
    rows = {"face_recognition 1.3.0": peer_identify(peer, sp)}
    for v in VARIANTS:
        r = identify.evaluate(ours, sp, v)
        rows[f"facetrace {v}"] = {
            k: r[k]
            for k in (
                "rank1",
                "rank10",
                "fnir_at_fpir_0.1",
                "fnir_at_fpir_0.01",
                "fnir_at_fpir_0.001",
            )
        }
    cols = ["rank1", "rank10", "fnir_at_fpir_0.1", "fnir_at_fpir_0.01", "fnir_at_fpir_0.001"]
    print(f"{'identification':28}" + "".join(f"{c:>20}" for c in cols))
    for name, r in rows.items():
        print(f"{name:28}" + "".join(f"{r[c]:20.4f}" for c in cols))
    print(
        f"peer FPIR at its tolerance 0.6: {rows['face_recognition 1.3.0']['fpir_at_tolerance']:.4f}"
    )


if __name__ == "__main__":
    main()

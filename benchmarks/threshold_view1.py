"""Choose the 1:1 "same person" threshold on LFW View 1 (the development split).

Embeds every photo of ``pairsDevTrain.txt`` and ``pairsDevTest.txt`` as ``facetrace eval``
does (cached in the data directory), then prints, per embedding variant, the
accuracy-maximising cosine threshold on DevTrain and the accuracy it gives on DevTest.
View 2 stays untouched for reporting.

    .venv/bin/python benchmarks/threshold_view1.py [--data .eval-data] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from facetrace.evaluation import metrics
from facetrace.evaluation.embeddings import embed_photos
from facetrace.evaluation.pairs import read_pairs
from facetrace.evaluation.verify import VARIANTS, pair_scores
from facetrace.settings import Settings

LFW = (
    Path(
        os.environ.get("FACETRACE_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces")
    )
    / "lfw"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(".eval-data"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    train = read_pairs(LFW / "pairsDevTrain.txt", LFW / "images")
    test = read_pairs(LFW / "pairsDevTest.txt", LFW / "images")
    photos = sorted(set(train.photos()) | set(test.photos()))
    faces = embed_photos(photos, Settings.load(env={}, data_dir=args.data), workers=args.workers)
    print(f"{len(photos)} photos; face found by {faces.counts()}")
    for v in VARIANTS:
        s_train = pair_scores(faces, train, v)
        t = metrics.best_threshold(s_train, train.same)
        acc_train = metrics.accuracy_at(s_train, train.same, t)
        acc_test = metrics.accuracy_at(pair_scores(faces, test, v), test.same, t)
        print(
            f"{v:6} DevTrain ({len(train)} pairs): threshold {t:.4f}, accuracy {acc_train:.4f}; "
            f"DevTest ({len(test)} pairs): accuracy {acc_test:.4f}"
        )


if __name__ == "__main__":
    main()

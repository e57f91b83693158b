"""Accuracy metrics from scores (higher = more alike), as the LFW protocol and NIST's 1:N
evaluations (FRVT / FRTE) define them.

Verification (1:1), from genuine (same person) and impostor (different people) scores:
- FAR / FMR at threshold t: share of impostor scores >= t; TAR = 1 - FRR: share of
  genuine scores >= t. ``roc`` gives the curve, ``eer`` the equal error rate,
  ``tar_at_far`` the TAR at the lowest threshold whose FAR <= the target.
- ``kfold_accuracy``: LFW View 2. For each fold, the threshold that maximises accuracy
  on the other nine folds is applied to it; mean and standard deviation over folds.

Identification (1:N, open set), from searches of a gallery:
- mated search: the probe's person is enrolled; non-mated: they are not.
- CMC / rank-k hit rate: share of mated searches with the mate among the first k.
- FPIR(t): share of non-mated searches whose best score >= t (a false alarm).
- FNIR(t): share of mated searches in which the mate is not returned at rank 1 with a
  score >= t (rank 1: the investigator sees the mate first, above the threshold).
- ``fnir_at_fpir``: choose t on the non-mated searches so that FPIR = target, report FNIR.
"""

from __future__ import annotations

import numpy as np


def roc(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds), thresholds descending; far and tar rise along the arrays."""
    g = np.sort(np.asarray(genuine, np.float64))
    i = np.sort(np.asarray(impostor, np.float64))
    thresholds = np.unique(np.concatenate([g, i]))[::-1]
    tar = (len(g) - np.searchsorted(g, thresholds, side="left")) / max(len(g), 1)
    far = (len(i) - np.searchsorted(i, thresholds, side="left")) / max(len(i), 1)
    return far, tar, thresholds


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold where FAR and FRR cross)."""
    far, tar, thr = roc(genuine, impostor)
    frr = 1 - tar
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2), float(thr[k])


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, target: float) -> tuple[float, float]:
    """(TAR, threshold) at the lowest threshold whose FAR does not exceed ``target``."""
    far, tar, thr = roc(genuine, impostor)
    ok = np.nonzero(far <= target)[0]
    if len(ok) == 0:
        return 0.0, float("inf")
    k = int(ok[-1])
    return float(tar[k]), float(thr[k])


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold that maximises accuracy (``score >= t`` means same)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order].astype(np.int64)
    # accepting the first j pairs: correct = genuine among them + impostors after them
    correct = np.concatenate([[0], np.cumsum(2 * y - 1)]) + (len(y) - y.sum())
    j = int(np.argmax(correct))
    if j == 0:
        return float(s[0]) + 1e-6
    if j == len(s):
        return float(s[-1])
    return float((s[j - 1] + s[j]) / 2)


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, object]:
    """LFW-style k-fold accuracy: thresholds chosen on the other folds."""
    accs, thresholds = [], []
    for f in np.unique(folds):
        train, test = folds != f, folds == f
        t = best_threshold(scores[train], same[train])
        accs.append(float(((scores[test] >= t) == same[test]).mean()))
        thresholds.append(t)
    return {
        "mean_accuracy": float(np.mean(accs)),
        "std_accuracy": float(np.std(accs)),
        "fold_accuracies": accs,
        "fold_thresholds": thresholds,
    }


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(((scores >= threshold) == same).mean())


def cmc(mate_ranks: np.ndarray, max_rank: int = 20) -> list[float]:
    """Hit rate at ranks 1..max_rank; ``mate_ranks`` are 1-based (0 = mate not returned)."""
    r = np.asarray(mate_ranks)
    return [float(((r >= 1) & (r <= k)).mean()) for k in range(1, max_rank + 1)]


def fpir_threshold(nonmated_top: np.ndarray, fpir: float) -> float:
    """The lowest threshold at which at most ``fpir`` of non-mated searches alarm."""
    s = np.sort(np.asarray(nonmated_top, np.float64))[::-1]
    allowed = int(np.floor(fpir * len(s)))
    if allowed >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[allowed], np.inf))


def fnir_at_fpir(
    mate_rank1_scores: np.ndarray, nonmated_top: np.ndarray, fpir: float
) -> tuple[float, float]:
    """(FNIR, threshold) at the threshold giving ``fpir`` on the non-mated searches.

    ``mate_rank1_scores``: per mated search, the mate's score when it is at rank 1, else
    ``-inf``.
    """
    t = fpir_threshold(nonmated_top, fpir)
    return float((np.asarray(mate_rank1_scores) < t).mean()), t

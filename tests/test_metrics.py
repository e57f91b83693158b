"""Accuracy metrics and score calibration on small hand-made score sets."""

from __future__ import annotations

import numpy as np
import pytest

from facetrace import calibration as cal
from facetrace.evaluation import metrics


def test_roc_eer_and_tar_at_far() -> None:
    genuine = np.array([0.9, 0.8, 0.7, 0.6])
    impostor = np.array([0.65, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.0, -0.1, -0.2])
    far, tar, thr = metrics.roc(genuine, impostor)
    assert far[0] == 0 and tar[0] == 0.25 and thr[0] == 0.9
    assert metrics.tar_at_far(genuine, impostor, 0.0) == (0.75, 0.7)
    assert metrics.tar_at_far(genuine, impostor, 0.1) == (1.0, 0.6)
    eer, _ = metrics.eer(genuine, impostor)
    assert eer == pytest.approx(0.0, abs=0.15)


def test_kfold_accuracy_chooses_thresholds_on_other_folds() -> None:
    rng = np.random.default_rng(1)
    same = np.tile([True, False], 100)
    scores = np.where(same, rng.normal(0.9, 0.02, 200), rng.normal(0.8, 0.02, 200))
    folds = np.arange(200) % 10
    r = metrics.kfold_accuracy(scores, same, folds)
    assert len(r["fold_accuracies"]) == 10 and r["mean_accuracy"] > 0.98
    assert all(0.83 < t < 0.87 for t in r["fold_thresholds"])
    t = metrics.best_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True]))
    assert 0.2 < t <= 0.8


def test_cmc_and_fnir_at_fpir() -> None:
    assert metrics.cmc(np.array([1, 2, 0, 1]), 3) == [0.5, 0.75, 0.75]
    nonmated = np.linspace(0.0, 0.99, 100)  # 1 in 100 at or above 0.985
    t = metrics.fpir_threshold(nonmated, 0.01)
    assert (nonmated >= t).mean() == pytest.approx(0.01)
    mated = np.array([0.995, 0.999, 0.9, -np.inf])
    fnir, t2 = metrics.fnir_at_fpir(mated, nonmated, 0.01)
    assert t2 == t and fnir == 0.5


def test_calibration_maps_scores_to_false_match_rates() -> None:
    rng = np.random.default_rng(0)
    impostor = np.clip(rng.normal(0.8, 0.04, 200_000), -1, 1)
    genuine = np.clip(rng.normal(0.95, 0.015, 5_000), -1, 1)
    c = cal.fit(
        cal.count_at_least(impostor),
        len(impostor),
        cal.count_at_least(genuine),
        len(genuine),
        "m",
        "synthetic",
    )
    fmr_a, _ = c.fmr_at(0.85)
    fmr_b, _ = c.fmr_at(0.9)
    assert fmr_a > fmr_b and fmr_a == pytest.approx((impostor >= 0.85).mean(), rel=0.1)
    top, bound = c.fmr_at(0.999)
    assert bound and top == pytest.approx(1 / 200_000)
    small, large = c.threshold_for_fpir(0.01, 10), c.threshold_for_fpir(0.01, 10_000)
    assert small < large  # the same score means more in a small gallery
    assert c.fmr_at(c.threshold_for_fmr(1e-3))[0] <= 1e-3 * 1.0001
    again = cal.Calibration.from_dict(c.to_dict())
    assert again.fmr_at(0.88) == c.fmr_at(0.88)

"""What a score means: the false match rate (FMR) at each score, and the open-set threshold.

A calibration is fitted from impostor (different people) and genuine (same person) scores
of labelled photos: ``fmr_at(score)`` is the share of impostor comparisons scoring at least
``score``. It is shipped as data beside the default model
(``facetrace/data/calibration-<model>.json``, fitted on all of LFW) and can be refitted on
a user's own labelled photos with ``facetrace calibrate`` (saved in the data directory,
where it takes precedence).

Conventions:
- Below the lowest FMR the data can measure (one impostor pair in all of them), the FMR
  is reported as that floor and flagged ``fmr_is_upper_bound``: we cannot claim less.
- For a search of N gallery faces, the expected number of strangers scoring at least s
  is ``N * fmr_at(s)``. The chance that at least one does (a false alarm) would be
  ``1 - (1 - fmr)^N`` if the N comparisons were independent; they are not (a probe that
  looks like many people scores high against all of them), so the calibration also
  measures real non-mated searches of a gallery of its photos and keeps the factor
  ``search_factor`` by which the per-comparison rate that explains their false alarms
  differs from the pairwise FMR (median over the scores where both are measured). The
  open-set threshold for a target FPIR and N faces is then the score whose FMR is
  ``(1 - (1 - FPIR)^(1/N)) / search_factor``: the same score means more in a gallery of
  10 than in one of 10 million.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facetrace.errors import ConfigError

PACKAGED = Path(__file__).with_name("data")
GRID = np.round(np.arange(0.3, 1.00001, 0.0005), 4)


@dataclass(frozen=True)
class Calibration:
    model: str
    scores: np.ndarray  # ascending grid of scores
    fmr: np.ndarray  # share of impostor comparisons >= each score (non-increasing)
    tar: np.ndarray  # share of genuine comparisons >= each score
    impostor_pairs: int
    genuine_pairs: int
    source: str
    search_factor: float = 1.0
    search_gallery_size: int = 0
    search_nonmated: int = 0
    search_ratio: np.ndarray | None = None  # per grid score; see ``search_ratios``

    @property
    def fmr_floor(self) -> float:
        return 1.0 / max(self.impostor_pairs, 1)

    def fmr_at(self, score: float) -> tuple[float, bool]:
        """(FMR at ``score``, whether it is only an upper bound)."""
        if score <= self.scores[0]:
            return float(self.fmr[0]), False
        logf = np.log10(np.maximum(self.fmr, self.fmr_floor))
        value = float(10 ** np.interp(score, self.scores, logf))
        return max(value, self.fmr_floor), value <= self.fmr_floor * 1.0000001

    def threshold_for_fmr(self, fmr: float) -> float:
        """The score at which the FMR falls to ``fmr`` (interpolated in log FMR between
        grid points; the top of the grid when the data cannot measure so low a rate)."""
        return self._solve(self.fmr, fmr)

    def _solve(self, rate: np.ndarray, target: float) -> float:
        ok = np.nonzero(rate <= target)[0]
        if not len(ok):
            return float(self.scores[-1])
        k = int(ok[0])
        if k == 0 or rate[k] <= 0:
            return float(self.scores[k])
        lo, hi = np.log10(rate[k - 1]), np.log10(max(rate[k], self.fmr_floor))
        if lo <= hi:
            return float(self.scores[k])
        frac = (lo - np.log10(target)) / (lo - hi)
        return float(self.scores[k - 1] + frac * (self.scores[k] - self.scores[k - 1]))

    def threshold_for_fpir(self, fpir: float, gallery_faces: int) -> float:
        """Open-set threshold for a target FPIR when searching ``gallery_faces`` faces."""
        n = max(gallery_faces, 1)
        per_comparison = 1.0 - (1.0 - fpir) ** (1.0 / n)
        ratio = self.search_ratio if self.search_ratio is not None else self.search_factor
        return self._solve(self.fmr * ratio, per_comparison)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "impostor_pairs": self.impostor_pairs,
            "genuine_pairs": self.genuine_pairs,
            "scores": [float(x) for x in self.scores],
            "fmr": [float(x) for x in self.fmr],
            "tar": [float(x) for x in self.tar],
            "search_factor": self.search_factor,
            "search_gallery_size": self.search_gallery_size,
            "search_nonmated": self.search_nonmated,
            "search_ratio": None
            if self.search_ratio is None
            else [round(float(x), 5) for x in self.search_ratio],
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(
            model=d["model"],
            scores=np.asarray(d["scores"], np.float64),
            fmr=np.asarray(d["fmr"], np.float64),
            tar=np.asarray(d["tar"], np.float64),
            impostor_pairs=int(d["impostor_pairs"]),
            genuine_pairs=int(d["genuine_pairs"]),
            source=d["source"],
            search_factor=float(d.get("search_factor", 1.0)),
            search_gallery_size=int(d.get("search_gallery_size", 0)),
            search_nonmated=int(d.get("search_nonmated", 0)),
            search_ratio=None
            if d.get("search_ratio") is None
            else np.asarray(d["search_ratio"], np.float64),
        )


def fit(
    impostor_counts: np.ndarray,
    impostor_total: int,
    genuine_counts: np.ndarray,
    genuine_total: int,
    model: str,
    source: str,
) -> Calibration:
    """From counts of comparisons scoring >= each ``GRID`` score."""
    return Calibration(
        model,
        GRID.astype(np.float64),
        impostor_counts / max(impostor_total, 1),
        genuine_counts / max(genuine_total, 1),
        impostor_total,
        genuine_total,
        source,
    )


def search_ratios(
    calib: Calibration, nonmated_top: np.ndarray, gallery_size: int
) -> tuple[float, np.ndarray | None]:
    """How the per-comparison rate behind real non-mated searches' false alarms compares
    with the pairwise FMR, at each grid score with at least 20 alarms (and not all);
    extended to the rest of the grid by the nearest measured value. Returns (median
    ratio, ratio per grid score), or (1.0, None) when nothing could be measured."""
    top = np.sort(np.asarray(nonmated_top, np.float64))
    alarms = len(top) - np.searchsorted(top, calib.scores, side="left")
    measured = np.nonzero((alarms >= 20) & (alarms < len(top)) & (calib.fmr > 0))[0]
    if not len(measured):
        return 1.0, None
    fpir = alarms[measured] / len(top)
    ratio = (1.0 - (1.0 - fpir) ** (1.0 / gallery_size)) / calib.fmr[measured]
    full = np.interp(np.arange(len(calib.scores)), measured, ratio)  # flat beyond the ends
    return float(np.median(ratio)), full


def count_at_least(scores: np.ndarray) -> np.ndarray:
    """How many of ``scores`` are >= each ``GRID`` score."""
    s = np.sort(np.asarray(scores, np.float64).ravel())
    return (len(s) - np.searchsorted(s, GRID, side="left")).astype(np.int64)


def calibration_file(data_dir: Path, model: str) -> Path:
    return data_dir / f"calibration-{model}.json"


def load_calibration(data_dir: Path, model: str) -> Calibration:
    """The user's calibration for ``model`` if they made one, else the packaged one."""
    found = find_calibration(data_dir, model)
    if found is None:
        raise ConfigError(f"no calibration for model {model!r}; run `facetrace calibrate`")
    return found


def find_calibration(data_dir: Path, model: str) -> Calibration | None:
    """Like ``load_calibration``, but None when there is none for ``model``."""
    for path in (calibration_file(data_dir, model), calibration_file(PACKAGED, model)):
        if path.is_file():
            try:
                cal = Calibration.from_dict(json.loads(path.read_text()))
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"calibration file is damaged ({exc})", path=path) from None
            if cal.model != model:
                raise ConfigError(
                    f"calibration is for model {cal.model!r}, not {model!r}", path=path
                )
            return cal
    return None

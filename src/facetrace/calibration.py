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
  is ``N * fmr_at(s)``; the open-set threshold for a target false positive
  identification rate (FPIR) is the score whose ``fmr_at`` is ``1 - (1 - FPIR)^(1/N)``,
  about ``FPIR / N``: the same score means more in a gallery of 10 than of 10 million.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facetrace.errors import ConfigError

PACKAGED = Path(__file__).with_name("data")
GRID = np.round(np.arange(0.5, 1.00001, 0.0025), 4)


@dataclass(frozen=True)
class Calibration:
    model: str
    scores: np.ndarray  # ascending grid of scores
    fmr: np.ndarray  # share of impostor comparisons >= each score (non-increasing)
    tar: np.ndarray  # share of genuine comparisons >= each score
    impostor_pairs: int
    genuine_pairs: int
    source: str

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
        """The lowest score whose FMR is at most ``fmr`` (the top of the grid if none)."""
        ok = np.nonzero(self.fmr <= fmr)[0]
        return float(self.scores[ok[0]]) if len(ok) else float(self.scores[-1])

    def threshold_for_fpir(self, fpir: float, gallery_faces: int) -> float:
        """Open-set threshold for a target FPIR when searching ``gallery_faces`` faces."""
        n = max(gallery_faces, 1)
        return self.threshold_for_fmr(1.0 - (1.0 - fpir) ** (1.0 / n))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "impostor_pairs": self.impostor_pairs,
            "genuine_pairs": self.genuine_pairs,
            "scores": [float(x) for x in self.scores],
            "fmr": [float(x) for x in self.fmr],
            "tar": [float(x) for x in self.tar],
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

"""PNG plots a person can look at: ROC and DET curves, and the genuine vs impostor score
histograms (matplotlib, drawn off-screen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facetrace.evaluation import metrics


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_det(curves: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, title: str) -> Path:
    """ROC (TAR against FAR, log FAR) and DET (FRR against FAR, log-log) side by side."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, (gen, imp) in curves.items():
        far, tar, _ = metrics.roc(gen, imp)
        keep = far > 0
        ax1.plot(far[keep], tar[keep], label=label)
        ax2.plot(far[keep], np.maximum(1 - tar[keep], 1e-5), label=label)
    ax1.set(
        xscale="log",
        xlabel="false accept rate (FAR)",
        ylabel="true accept rate (TAR)",
        title=f"ROC: {title}",
    )
    ax2.set(
        xscale="log",
        yscale="log",
        xlabel="false accept rate (FAR)",
        ylabel="false reject rate (FRR)",
        title=f"DET: {title}",
    )
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def histogram(
    groups: dict[str, np.ndarray], out: Path, title: str, threshold: float | None = None
) -> Path:
    """Overlaid score histograms (e.g. genuine vs impostor, mated vs non-mated)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    finite = [v[np.isfinite(v)] for v in groups.values()]
    lo = min(float(v.min()) for v in finite if len(v))
    bins = np.linspace(lo, 1.0, 80)
    for (label, _), values in zip(groups.items(), finite, strict=True):
        ax.hist(values, bins=bins, alpha=0.55, density=True, label=f"{label} ({len(values):,})")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="score (cosine similarity)", ylabel="density", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cmc(curves: dict[str, list[float]], out: Path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, c in curves.items():
        ax.plot(range(1, len(c) + 1), c, marker="o", label=label)
    ax.set(
        xlabel="rank", ylabel="share of mated searches with the mate at or above rank", title=title
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

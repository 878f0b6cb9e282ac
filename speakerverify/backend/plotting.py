"""DET curve (probit axes) and score histogram PNGs; matplotlib (Agg, no pyplot) imported lazily."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from speakerverify.errors import SpeakerVerifyError
from speakerverify.files import write_atomic

__all__ = ["plot_det", "plot_histogram"]

_TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]
_MAX_POINTS = 20000


class PlotError(SpeakerVerifyError):
    """A plot file cannot be written; the message names it."""


def _save(figure: Any, path: str | os.PathLike) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    FigureCanvasAgg(figure)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, lambda stream: figure.savefig(stream, format="png", dpi=110))
    except OSError as error:
        raise PlotError(f"{path}: cannot write ({error.strerror or error})") from None


def _thin(p_miss: np.ndarray, p_fa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ~_MAX_POINTS points of a long curve (a plot cannot show more)."""
    if p_miss.size <= _MAX_POINTS:
        return p_miss, p_fa
    keep = np.unique(np.linspace(0, p_miss.size - 1, _MAX_POINTS).astype(np.int64))
    return p_miss[keep], p_fa[keep]


def plot_det(
    p_miss: np.ndarray,
    p_fa: np.ndarray,
    path: str | os.PathLike,
    *,
    label: str = "",
    eer: float | None = None,
    title: str = "DET curve",
) -> Path:
    """Write a DET curve (miss vs false-alarm probability on normal-deviate axes) as PNG.

    Args:
        p_miss: (K,) miss probabilities of the operating points (`metrics.det_curve`).
        p_fa: (K,) false-alarm probabilities.
        path: output .png.
        label: legend entry.
        eer: marks the EER point when given.
    """
    from matplotlib.figure import Figure
    from scipy.special import ndtri

    p_miss, p_fa = _thin(np.asarray(p_miss), np.asarray(p_fa))
    floor = 1e-4
    figure = Figure(figsize=(5.5, 5.5))
    axes = figure.add_subplot()
    axes.plot(ndtri(np.clip(p_fa, floor, 1 - floor)), ndtri(np.clip(p_miss, floor, 1 - floor)),
              label=label or None)  # fmt: skip
    if eer is not None:
        point = ndtri(np.clip(eer, floor, 1 - floor))
        axes.plot([point], [point], "o", label=f"EER {100 * eer:.2f}%")
    ticks = ndtri(np.array(_TICKS))
    names = [f"{100 * t:g}" for t in _TICKS]
    for set_ticks, set_labels in ((axes.set_xticks, axes.set_xticklabels),
                                  (axes.set_yticks, axes.set_yticklabels)):  # fmt: skip
        set_ticks(ticks)
        set_labels(names)
    limits = ndtri(np.array([0.0005, 0.5]))
    axes.set_xlim(*limits)
    axes.set_ylim(*limits)
    axes.plot(limits, limits, ":", color="grey", linewidth=0.8)
    axes.set_xlabel("false alarm probability (%)")
    axes.set_ylabel("miss probability (%)")
    axes.set_title(title)
    axes.grid(True, linewidth=0.4)
    if label or eer is not None:
        axes.legend(loc="upper right")
    return _save(figure, path)


def plot_histogram(
    scores: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    *,
    thresholds: dict[str, float] | None = None,
    title: str = "score distributions",
) -> Path:
    """Write target / non-target score histograms (densities) with optional threshold lines.

    Args:
        scores: (N,) scores.
        labels: (N,) 1 target / 0 non-target.
        path: output .png.
        thresholds: name -> score, drawn as vertical lines.
    """
    from matplotlib.figure import Figure

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    finite = np.isfinite(scores)
    low, high = np.percentile(scores[finite], [0.05, 99.95])
    bins = np.linspace(low, high, 101)
    figure = Figure(figsize=(6.5, 4.0))
    axes = figure.add_subplot()
    axes.hist(scores[labels & finite], bins=bins, density=True, alpha=0.6, label="target")
    axes.hist(scores[~labels & finite], bins=bins, density=True, alpha=0.6, label="non-target")
    for index, (name, value) in enumerate((thresholds or {}).items()):
        if np.isfinite(value):
            axes.axvline(value, color=f"C{index + 2}", linestyle="--", label=name)
    axes.set_xlabel("score")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend()
    return _save(figure, path)

"""Pictures of a verification system beyond the DET curve: embeddings by speaker, scores by class,
and EER against model size (the studies' Fig. 5).

All write PNG files atomically and need matplotlib (the ``plot`` extra).
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from svmix.errors import SvmixError

# One point of an EER-against-size curve: size, EER (%), its 95% interval or None, a label ("L=4").
SizePoint = Tuple[float, float, Optional[Tuple[float, float]], str]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: os.PathLike) -> None:
    from svmix.utils.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def plot_tsne(embeddings: np.ndarray, speakers: Sequence[str], path: os.PathLike, max_speakers: int = 40,
              seed: int = 0, title: str = "Test embeddings (t-SNE)") -> int:
    """2-D t-SNE (scikit-learn) of L2-normalised embeddings, one colour per speaker.

    At most ``max_speakers`` speakers (the first in sorted order) are drawn, so a large test set
    stays readable; returns how many points were drawn.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(speakers):
        raise SvmixError(f"t-SNE needs one speaker per embedding: {x.shape} embeddings, {len(speakers)} speakers")
    if not np.isfinite(x).all():
        raise SvmixError("t-SNE: embeddings contain NaN or infinite values")
    names = sorted(set(speakers))[:max_speakers]
    keep = np.isin(np.asarray(speakers), names)
    x = x[keep] / np.maximum(np.linalg.norm(x[keep], axis=1, keepdims=True), 1e-12)
    labels = np.asarray(speakers)[keep]
    if len(x) < 5:
        raise SvmixError(f"t-SNE needs at least 5 embeddings, got {len(x)}")
    with threadpool_limits(1):  # the same picture on every machine
        xy = TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3.0), init="pca", random_state=seed,
                  metric="cosine").fit_transform(x)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    cmap = plt.get_cmap("tab20", max(len(names), 1))
    for i, name in enumerate(names):
        sel = labels == name
        ax.scatter(xy[sel, 0], xy[sel, 1], s=10, color=cmap(i % cmap.N), marker="os^v"[(i // 20) % 4])
    ax.set_title(f"{title}: {len(names)} speakers, {len(x)} utterances")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return int(len(x))


def plot_score_histogram(scores: np.ndarray, labels: np.ndarray, path: os.PathLike,
                         threshold: Optional[float] = None, threshold_label: str = "threshold",
                         bins: int = 80, title: str = "Scores") -> None:
    """Target and non-target score histograms (densities), with the decision threshold if given."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or not labels.any() or labels.all():
        raise SvmixError("score histogram needs target and non-target scores, one label per score")
    if not np.isfinite(scores).all():
        raise SvmixError("score histogram: scores contain NaN or infinite values")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    edges = np.linspace(scores.min(), scores.max(), bins + 1)
    ax.hist(scores[~labels], edges, density=True, alpha=0.6, label=f"non-target ({int((~labels).sum())})")
    ax.hist(scores[labels], edges, density=True, alpha=0.6, label=f"target ({int(labels.sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"{threshold_label} = {threshold:.3f}")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_eer_against_size(panels: Mapping[str, Mapping[str, Sequence[SizePoint]]], path: os.PathLike,
                          xlabel: str = "total parameters (M)", title: str = "EER against model size") -> None:
    """EER against size, one panel per test condition: ``{condition: {curve: [(size, eer, ci, label),
    ...]}}``. Each curve's points are joined in order of size and drawn with their 95% interval
    (``ci``: ``(low, high)`` or None) as error bars; ``label`` (e.g. ``L=4``) is written beside the point."""
    if not panels or not all(panels.values()):
        raise SvmixError("EER-against-size plot: no points to draw")
    for condition, curves in panels.items():
        for curve, points in curves.items():
            if not points:
                raise SvmixError(f"EER-against-size plot: curve '{curve}' of '{condition}' has no points")
            values = [v for size, eer, ci, _ in points for v in (size, eer, *(ci or ()))]
            if not np.isfinite(np.asarray(values, dtype=np.float64)).all():
                raise SvmixError(f"EER-against-size plot: curve '{curve}' of '{condition}' has NaN or infinite values")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (condition, curves) in zip(axes[0], panels.items()):
        for i, (marker, (curve, points)) in enumerate(zip("os^vD<>", curves.items())):
            points = sorted(points, key=lambda p: p[0])
            x = np.array([p[0] for p in points], dtype=np.float64)
            y = np.array([p[1] for p in points], dtype=np.float64)
            err = np.array([[p[1] - p[2][0], p[2][1] - p[1]] if p[2] else [0.0, 0.0] for p in points]).T
            ax.errorbar(x, y, yerr=np.maximum(err, 0.0), marker=marker, capsize=3, label=curve)
            for xi, yi, (_, _, _, text) in zip(x, y, points):
                if text:
                    ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(4, 4 if i % 2 == 0 else -12),
                                fontsize="small")  # curves alternately above and below their points
        ax.set_xlabel(xlabel)
        ax.set_ylabel("EER (%)")
        ax.set_title(condition)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)

"""The embedding picture of a frozen evaluation: a t-SNE map of test features per model, side by side, coloured by class.

Scores say how separable the classes are; the map shows how (which classes merge, whether a model's features
cluster by class at all next to a random initialisation's). Each panel is scikit-learn's ``TSNE`` (van der Maaten &
Hinton, 2008) of one model's features of the same test images: at most ``max_points`` of them (a seeded subsample,
the same images in every panel, so panels compare), standardised and reduced to 50 dimensions by PCA first (the
usual preconditioning; it also bounds the cost), perplexity 30, PCA initialisation, a fixed seed. t-SNE over UMAP:
it ships with scikit-learn (already a dependency); UMAP would add umap-learn and numba for the same picture.

Each panel's title carries the model's kNN accuracy from the same report when there is one, so the map is read with
its number. A t-SNE map distorts distances between clusters; it is a picture for a person, never a score.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rspretrain.core.errors import DataError

__all__ = ["embedding_subsample", "plot_embeddings", "tsne_map"]

_CLASS_COLOURS = "tab20"


def embedding_subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` items (all when ``n <= max_points``), seeded."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def tsne_map(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE coordinates of ``features`` (n x d): standardised, PCA to at most 50 dimensions, then t-SNE.

    Raises:
        DataError: fewer than 5 points, or non-finite features.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 5:
        raise DataError(f"a t-SNE map needs at least 5 feature vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("a t-SNE map of non-finite features")
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    dims = min(50, x.shape[1], len(x) - 1)
    if x.shape[1] > dims:
        x = PCA(n_components=dims, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, (len(x) - 1) / 3)  # scikit-learn requires perplexity < n
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed).fit_transform(x)


def plot_embeddings(
    panels: Mapping[str, np.ndarray],
    labels: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
    subtitles: Mapping[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """One t-SNE panel per model (``panels``: model name -> features of the same images, in order), coloured by
    ``labels`` (indices into ``classes``), one legend; written to ``path`` (PNG). Returns ``path``."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise DataError("no features to map")
    labels = np.asarray(labels)
    for name, feats in panels.items():
        if len(feats) != len(labels):
            raise DataError(f"{name}: {len(feats)} feature vectors for {len(labels)} labels")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmap = colormaps[_CLASS_COLOURS]
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols + 1.8, 4.0 * rows), dpi=90)
    FigureCanvasAgg(fig)
    for i, (name, feats) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        try:
            xy = tsne_map(feats, seed=seed)
        except DataError as err:
            raise DataError(f"{name}: {err}") from None
        for c in np.unique(labels):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=5, color=cmap(int(c) % cmap.N), alpha=0.8, linewidths=0,
                       label=classes[int(c)] if int(c) < len(classes) else str(c))
        ax.set_title(f"{name}\n{(subtitles or {}).get(name, '')}".strip(), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7, markerscale=2.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / (4.2 * cols + 1.8), 1))
    fig.savefig(path)
    return path

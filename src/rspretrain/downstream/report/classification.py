"""Scores of a trained classifier on a test set: overall accuracy, per-class accuracy, confusion matrix (+ PNG).

Overall accuracy (OA) comes with its 95 % percentile-bootstrap interval (:func:`rspretrain.downstream.frozen.bootstrap_accuracy`);
per-class accuracy is the recall of each class (the diagonal of the row-normalised confusion matrix), the number RS
scene-classification papers tabulate per class; their mean is the balanced accuracy. The confusion matrix is
sklearn's (rows = true class, columns = predicted class), over every class even if some never occur in the test set,
so it always sums to the number of test samples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix

from rspretrain.core.errors import DataError
from rspretrain.downstream.report.bootstrap import bootstrap_accuracy

__all__ = ["classification_scores", "plot_confusion_matrix"]


def classification_scores(
    y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int], classes: Sequence[str], seed: int = 0
) -> dict[str, Any]:
    """OA with bootstrap CI, per-class accuracy, mean per-class accuracy and the confusion matrix (JSON-ready).

    Raises:
        DataError: empty or mismatched inputs, or labels outside ``range(len(classes))``.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or y_true.size == 0:
        raise DataError(f"need equal-length non-empty label arrays, got {y_true.shape} and {y_pred.shape}")
    k = len(classes)
    for name, arr in (("true", y_true), ("predicted", y_pred)):
        if arr.min() < 0 or arr.max() >= k:
            raise DataError(f"{name} labels lie in [{arr.min()}, {arr.max()}], outside the {k} classes")
    cm = confusion_matrix(y_true, y_pred, labels=list(range(k)))
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(cm) / support, np.nan)
    oa, lo, hi = bootstrap_accuracy(y_true == y_pred, seed=seed)
    present = per_class[~np.isnan(per_class)]
    return {
        "overall_accuracy": oa,
        "overall_accuracy_ci": [lo, hi],
        "mean_per_class_accuracy": float(present.mean()) if present.size else None,
        "per_class_accuracy": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class)},
        "per_class_support": {c: int(s) for c, s in zip(classes, support)},
        "classes": list(classes),
        "confusion_matrix": cm.tolist(),
        "n_test": int(y_true.size),
    }


def plot_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Row-normalised confusion matrix as a heat map, counts written in the non-zero cells; headless (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    if cm.shape != (k, k):
        raise DataError(f"confusion matrix of shape {cm.shape} does not match {k} classes")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    side = max(4.5, 0.42 * k + 2.5)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6 if k > 12 else 8,
                        color="white" if norm[i, j] > 0.5 else "#222222")
    if title:
        ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=130)
    return path

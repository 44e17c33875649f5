"""Results of dense-task evaluations: a record type, a Markdown table, a bar chart, and image display helpers.

Scores are fractions in [0, 1] (shown as percentages). Segmentation mIoU and change F1 / IoU carry a 95 % bootstrap
interval over test images (``<metric>_ci``); detection AP has none (test sets of a few images). JSON files use
:func:`rspretrain.downstream.report.results.write_metrics_json` (``{"meta": ..., "results": [...]}``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rspretrain.core.errors import DataError

__all__ = ["HEADLINE_METRICS", "DenseResult", "display_rgb", "format_dense_table", "plot_dense_metrics"]

#: The scores shown in tables and plots for each task, headline first.
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "segmentation": ("miou", "pixel_accuracy"),
    "change": ("f1", "iou", "precision", "recall"),
    "detection": ("ap50", "ap"),
}
_LABELS = {"miou": "mIoU", "pixel_accuracy": "pixel acc.", "f1": "F1", "iou": "IoU", "precision": "precision",
           "recall": "recall", "ap50": "AP50", "ap": "AP[.5:.95]"}


@dataclass
class DenseResult:
    """The scores of one model on one dense task.

    Attributes:
        model: model label (``EncoderSpec.name``).
        task: ``"segmentation"``, ``"change"`` or ``"detection"``.
        dataset: dataset label.
        metrics: scores (fractions), ``<metric>_ci`` intervals, per-class dicts.
        n_train: training images (or pairs).
        n_test: test images (or pairs / regions).
        extra: schedule, timings, loss history, model details.
    """

    model: str
    task: str
    dataset: str
    metrics: dict[str, Any]
    n_train: int
    n_test: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DenseResult:
        return cls(**d)

    def cell(self, metric: str) -> str:
        """``"48.1 [40.2, 55.0]"`` (percent) or ``"-"`` when missing or undefined."""
        value = self.metrics.get(metric)
        if value is None or not math.isfinite(value) or value < 0:
            return "-"
        ci = self.metrics.get(f"{metric}_ci")
        if ci and all(v is not None and math.isfinite(v) for v in ci):
            return f"{100 * value:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        return f"{100 * value:.1f}"


def _plain(obj: Any) -> Any:
    """numpy scalars / arrays and paths to JSON-ready values; NaN to None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return _plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _ordered(values: list) -> list:
    return list(dict.fromkeys(values))


def format_dense_table(results: list[DenseResult]) -> str:
    """Markdown table: one row per model, one column per task metric (percent, 95 % CI where computed)."""
    models = _ordered([r.model for r in results])
    columns = _ordered([(r.task, r.dataset, m) for r in results for m in HEADLINE_METRICS.get(r.task, ())])
    cell = {(r.model, r.task, r.dataset): r for r in results}
    header = ["model"] + [f"{dataset} {_LABELS.get(m, m)}" for _, dataset, m in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(columns)) + "|"]
    for model in models:
        row = [model]
        for task, dataset, metric in columns:
            r = cell.get((model, task, dataset))
            row.append("-" if r is None else r.cell(metric))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_dense_metrics(results: list[DenseResult], path: str | os.PathLike, title: str | None = None) -> Path:
    """Bar chart: one panel per (dataset, metric), one bar per model (same colour everywhere), 95 % CI whiskers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise DataError("no results to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    models = _ordered([r.model for r in results])
    panels = _ordered([(r.task, r.dataset, m) for r in results for m in HEADLINE_METRICS.get(r.task, ())])
    cell = {(r.model, r.task, r.dataset): r for r in results}
    palette = ["#9e9e9e", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    colours = {m: ("#9e9e9e" if m == "random-init" else palette[1 + i % (len(palette) - 1)])
               for i, m in enumerate(x for x in models if x != "random-init")}
    colours.setdefault("random-init", "#9e9e9e")
    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(max(3.2, 0.8 * len(models) + 1.4) * ncols, 3.8 * nrows + (0.5 if title else 0)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, (task, dataset, metric) in zip(axes.flat, panels):
        shown = [m for m in models if (m, task, dataset) in cell]
        values, lows, highs = [], [], []
        for m in shown:
            r = cell[(m, task, dataset)]
            v = r.metrics.get(metric)
            v = float(v) if v is not None and math.isfinite(v) and v >= 0 else 0.0
            ci = r.metrics.get(f"{metric}_ci") or [v, v]
            ci = [c if c is not None and math.isfinite(c) else v for c in ci]
            values.append(100 * v)
            lows.append(100 * (v - ci[0]))
            highs.append(100 * (ci[1] - v))
        xs = np.arange(len(shown))
        ax.bar(xs, values, color=[colours[m] for m in shown], edgecolor="#333333", linewidth=0.6,
               yerr=[lows, highs], capsize=3, error_kw={"elinewidth": 0.9})
        for x, v, h in zip(xs, values, highs):
            ax.text(x, v + h + 1.5, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        n_test = cell[(shown[0], task, dataset)].n_test
        ax.set_title(f"{dataset} \u00b7 {_LABELS.get(metric, metric)} (n_test={n_test})", fontsize=10)
        ax.set_xticks(xs)
        ax.set_xticklabels(shown, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 110)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("score (%)")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.savefig(path, dpi=110)
    return path


def display_rgb(image: np.ndarray, band_names: tuple[str, ...] | None) -> np.ndarray:
    """``(H, W, 3)`` float image in [0, 1] for display: the RGB bands (else the first three, or the first band as
    grey), stretched between the 2nd and 98th percentile of each band."""
    from rspretrain.core.bands import rgb_indices

    rgb = rgb_indices(band_names, image.shape[0])
    if rgb is None:
        rgb = (0, 1, 2) if image.shape[0] >= 3 else (0, 0, 0)
    x = image[list(rgb)].astype(np.float32)
    low = np.percentile(x, 2, axis=(1, 2), keepdims=True)
    high = np.percentile(x, 98, axis=(1, 2), keepdims=True)
    x = (x - low) / np.maximum(high - low, 1e-6)
    return np.clip(x, 0, 1).transpose(1, 2, 0)

"""The one score chart of every report: a panel per (dataset, task, score), a bar per model, 95 % CI whiskers.

Each model keeps one colour across panels; the reference rows (the colour-statistics baseline, a random
initialisation) are grey and the baseline hatched, so the eye reads the other bars against them. The y axis starts
at 0 so bar heights are proportional to the scores. Panel titles shorten long dataset labels (a ``folder:`` path
shows its last two parts) and wrap, so they stay readable. Rendering uses the Agg canvas directly (no pyplot): it
works headless and never changes the global backend.

:func:`plot_training_curves` draws a training run's curves from its ``metrics.csv``: the loss and, when the run had
the online kNN monitor, its accuracy in a second panel on the same step axis.
"""

from __future__ import annotations

import csv
import math
import os
import textwrap
from pathlib import Path

from rspretrain.core.errors import DataError
from rspretrain.downstream.report.record import BASELINE_MODEL, METRIC_LABELS, Result, columns

__all__ = ["plot_scores", "plot_training_curves", "short_label"]

#: Rows every comparison is read against: drawn grey.
REFERENCE_MODELS = (BASELINE_MODEL, "random-init")
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def short_label(dataset: str, width: int = 28) -> str:
    """A dataset label fit for a panel title: a path keeps its last two parts, or its last one when that is still
    too long (``folder:…/scenes/rgb``); anything longer is cut at the front."""
    kind, sep, rest = dataset.partition(":") if ":" in dataset else ("", "", dataset)
    parts = Path(rest).parts
    candidates = [dataset]
    if len(parts) > 2:
        candidates += [f"{kind}{sep}\u2026/" + "/".join(parts[-2:]), f"{kind}{sep}\u2026/{parts[-1]}"]
    for label in candidates:
        if len(label) <= width:
            return label
    return "\u2026" + candidates[-1][-(width - 1):]


def plot_scores(results: list[Result], path: str | os.PathLike, title: str | None = None) -> Path:
    """Bar chart of the headline scores of ``results`` (see the module docstring); returns ``path``.

    Raises:
        DataError: ``results`` is empty.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise DataError("no results to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(r.model for r in results))
    panels = columns(results)
    cell = {(r.model, r.dataset, r.task): r for r in results}
    learned = [m for m in models if m not in REFERENCE_MODELS]
    colours = {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(learned)}
    colours.update({m: "#b0b0b0" for m in REFERENCE_MODELS})

    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    panel_width = max(3.4, 0.75 * len(models) + 1.6)
    heading = textwrap.fill(title, 90) if title else None
    fig = Figure(figsize=(panel_width * ncols, 4.2 * nrows + (0.3 + 0.25 * heading.count("\n") if heading else 0)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    long_names = max(len(m) for m in models) > 8 or len(models) > 4
    for ax, (dataset, task, metric) in zip(axes.flat, panels):
        shown = [m for m in models if (m, dataset, task) in cell]
        rows = [cell[(m, dataset, task)] for m in shown]
        values = [100 * (r.value(metric) or 0.0) for r in rows]
        intervals = [r.interval(metric) for r in rows]
        low = [v - 100 * ci[0] if ci else 0.0 for v, ci in zip(values, intervals)]
        high = [100 * ci[1] - v if ci else 0.0 for v, ci in zip(values, intervals)]
        xs = list(range(len(shown)))
        bars = ax.bar(xs, values, color=[colours[m] for m in shown], edgecolor="#333333", linewidth=0.6,
                      yerr=[low, high], capsize=4, error_kw={"elinewidth": 1.0, "ecolor": "#222222"})
        for bar, model in zip(bars, shown):
            if model == BASELINE_MODEL:
                bar.set_hatch("//")
        for x, r, v, h in zip(xs, rows, values, high):
            # Above the upper whisker, so the text never collides with the error bar.
            ax.text(x, v + h + 1.5, "-" if r.value(metric) is None else f"{v:.1f}", ha="center", va="bottom",
                    fontsize=8)
        name = METRIC_LABELS.get(metric, metric)
        heading_panel = f"{short_label(dataset)} \u00b7 {task}" + ("" if name == "accuracy" else f" \u00b7 {name}")
        ax.set_title(textwrap.fill(f"{heading_panel} (n_test={rows[0].n_test})", 34), fontsize=10)
        ax.set_xticks(xs)
        ax.set_xticklabels(shown, rotation=30 if long_names else 0, ha="right" if long_names else "center",
                           fontsize=8)
        ax.set_ylim(0, 110)
        ax.set_yticks(range(0, 101, 20))
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("score (%), 95 % CI")
    if heading:
        fig.suptitle(heading, fontsize=12)
    fig.savefig(path, dpi=130)
    return path


def plot_training_curves(metrics_csv: str | os.PathLike, path: str | os.PathLike, title: str | None = None,
                         loss_key: str = "train/loss", accuracy_key: str = "monitor/knn_accuracy") -> Path:
    """A run's training curves from its ``logs/metrics.csv``: the loss against the step and, in a second panel below
    it on the same step axis, the online kNN top-1 (%) when the run logged one
    (:mod:`rspretrain.downstream.frozen.knn_monitor`); a series the log lacks has no panel. Returns ``path``.

    Raises:
        DataError: the file is missing or holds neither series.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    metrics_csv, path = Path(metrics_csv), Path(path)
    if not metrics_csv.is_file():
        raise DataError(f"{metrics_csv}: no metrics log to plot")
    series: dict[str, dict[int, float]] = {loss_key: {}, accuracy_key: {}}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            for key, points in series.items():
                if row.get(key) not in (None, "") and row.get("step") not in (None, ""):
                    points[int(float(row["step"]))] = float(row[key])  # a step logged twice keeps its last value
    panels = [(key, points) for key, points in series.items() if points]
    if not panels:
        raise DataError(f"{metrics_csv}: no {loss_key} or {accuracy_key} values to plot")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6.4, 1.2 + 2.0 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (key, points) in zip(axes, panels):
        steps, values = zip(*sorted(points.items()))
        if key == accuracy_key:
            percent = [100 * v for v in values]
            ax.plot(steps, percent, color=_PALETTE[1], marker="o", markersize=3.5, linewidth=1.2)
            ax.set_ylabel("kNN top-1 (%)")
            ax.annotate(f"{percent[-1]:.1f}", (steps[-1], percent[-1]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
        else:
            ax.plot(steps, values, color=_PALETTE[0], linewidth=0.8)
            ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[-1].set_xlabel("step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(textwrap.fill(title, 70), fontsize=10)
    fig.savefig(path, dpi=110)
    return path

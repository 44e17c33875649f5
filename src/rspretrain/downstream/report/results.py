"""Results of scene-classification evaluations: a record type, JSON, a bar chart and a Markdown table.

Accuracies are stored as fractions in [0, 1] and shown as percentages. Each number comes with its 95 % bootstrap
interval (see :mod:`rspretrain.downstream.report.bootstrap`), so a reader can tell a real gain from test-set noise.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rspretrain.core.errors import DataError

__all__ = ["BASELINE_MODEL", "EvalResult", "format_table", "plot_accuracy", "read_metrics_json", "write_metrics_json"]

_T = TypeVar("_T")

#: Model name of the colour-statistics baseline row (see :mod:`rspretrain.downstream.frozen.image_statistics`).
BASELINE_MODEL = "image-statistics"


@dataclass
class EvalResult:
    """One (model, dataset, protocol) score.

    Attributes:
        model: Model label (``EncoderSpec.name`` or ``"image-statistics"``).
        dataset: Dataset name as given to the evaluation (e.g. ``"eurosat"``).
        protocol: ``"knn"`` or ``"linear"``.
        accuracy: Top-1 test accuracy as a fraction.
        ci_low: Lower end of the bootstrap interval (fraction).
        ci_high: Upper end of the bootstrap interval (fraction).
        n_train: Training samples the protocol saw.
        n_test: Test samples scored.
        extra: Protocol settings and other JSON-serialisable details.
    """

    model: str
    dataset: str
    protocol: str
    accuracy: float
    ci_low: float
    ci_high: float
    n_train: int
    n_test: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (numpy scalars converted) that ``json.dumps`` accepts."""
        d = asdict(self)
        for key in ("accuracy", "ci_low", "ci_high"):
            d[key] = float(d[key])
        for key in ("n_train", "n_test"):
            d[key] = int(d[key])
        d["extra"] = json.loads(json.dumps(d["extra"], default=_json_default))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "extra": dict(d.get("extra", {}))})


def _json_default(obj: Any) -> Any:
    """Serialise numpy scalars/arrays and paths that find their way into ``extra``."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_metrics_json(results: list[EvalResult], path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write ``{"meta": {...}, "results": [...]}`` atomically.

    The file is written to a temporary file in the same directory and moved into place with ``os.replace``, so a
    reader (or a crash mid-run) never sees a half-written file.

    Args:
        results: Scores to write, in order.
        path: Destination file; parent directories are created.
        meta: Run settings (datasets, protocols, seed, versions...).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": dict(meta or {}), "results": [r.to_dict() for r in results]}
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metrics_json(path: str | os.PathLike) -> tuple[dict[str, Any], list[EvalResult]]:
    """Read a file written by :func:`write_metrics_json`; returns ``(meta, results)``."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        return dict(payload["meta"]), [EvalResult.from_dict(r) for r in payload["results"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a readable metrics file ({type(e).__name__}: {e})") from None


def _ordered_unique(values: list[_T]) -> list[_T]:
    """Unique values in order of first appearance (keeps the caller's model/dataset order in plots and tables)."""
    return list(dict.fromkeys(values))


def _panels(results: list[EvalResult]) -> list[tuple[str, str]]:
    return _ordered_unique([(r.dataset, r.protocol) for r in results])


def format_table(results: list[EvalResult]) -> str:
    """Markdown table: one row per model, one column per ``dataset/protocol``, cells ``83.1 [82.0, 84.2]``.

    Cells are accuracy and 95 % interval in percent; a missing combination shows ``-``.
    """
    models = _ordered_unique([r.model for r in results])
    panels = _panels(results)
    cell = {(r.model, r.dataset, r.protocol): r for r in results}
    header = ["model"] + [f"{d}/{p}" for d, p in panels]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(panels)) + "|"]
    for model in models:
        row = [model]
        for dataset, protocol in panels:
            r = cell.get((model, dataset, protocol))
            row.append("-" if r is None else f"{100 * r.accuracy:.1f} [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy(results: list[EvalResult], path: str | os.PathLike, title: str | None = None) -> Path:
    """Bar chart of accuracies: one panel per (dataset, protocol), one bar per model, 95 % CI error bars.

    Each model keeps one colour across panels; the colour-statistics baseline is drawn grey and hatched so the eye
    reads the other bars relative to it. The y axis starts at 0 so bar heights are proportional to accuracy.
    Rendering uses the Agg canvas directly (no pyplot), so it works headless and never changes the global backend.

    Args:
        results: Scores to plot.
        path: Destination image (format from the suffix, e.g. ``.png``); parent directories are created.
        title: Figure title.

    Returns:
        The path written.

    Raises:
        DataError: ``results`` is empty.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise DataError("no results to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    models = _ordered_unique([r.model for r in results])
    panels = _panels(results)
    cell = {(r.model, r.dataset, r.protocol): r for r in results}

    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    learned = [m for m in models if m != BASELINE_MODEL]
    colours = {m: palette[i % len(palette)] for i, m in enumerate(learned)}
    colours[BASELINE_MODEL] = "#b0b0b0"

    datasets = _ordered_unique([d for d, _ in panels])
    protocols = _ordered_unique([p for _, p in panels])
    if len(panels) == len(datasets) * len(protocols) and len(protocols) <= 4:
        # Full grid: one row per dataset, one column per protocol, so kNN and linear line up vertically.
        nrows, ncols = len(datasets), len(protocols)
        panels = [(d, p) for d in datasets for p in protocols]
    else:
        ncols = min(len(panels), 3)
        nrows = math.ceil(len(panels) / ncols)
    panel_w = max(3.6, 0.75 * len(models) + 1.6)
    fig = Figure(figsize=(panel_w * ncols, 4.4 * nrows + (0.5 if title else 0.0)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    long_names = max(len(m) for m in models) > 8 or len(models) > 4

    for ax, (dataset, protocol) in zip(axes.flat, panels):
        shown = [m for m in models if (m, dataset, protocol) in cell]
        rs = [cell[(m, dataset, protocol)] for m in shown]
        xs = list(range(len(shown)))
        heights = [100 * r.accuracy for r in rs]
        yerr = [[100 * (r.accuracy - r.ci_low) for r in rs], [100 * (r.ci_high - r.accuracy) for r in rs]]
        bars = ax.bar(
            xs,
            heights,
            color=[colours[m] for m in shown],
            edgecolor="#333333",
            linewidth=0.6,
            yerr=yerr,
            capsize=4,
            error_kw={"elinewidth": 1.0, "ecolor": "#222222"},
        )
        for bar, m in zip(bars, shown):
            if m == BASELINE_MODEL:
                bar.set_hatch("//")
        for x, r in zip(xs, rs):
            # Label above the upper CI whisker so the text never collides with the error bar.
            ax.text(x, 100 * r.ci_high + 1.5, f"{100 * r.accuracy:.1f}", ha="center", va="bottom", fontsize=9)
        ax.set_title(f"{dataset} \u00b7 {protocol}  (n_test={rs[0].n_test})", fontsize=11)
        ax.set_xticks(xs)
        ax.set_xticklabels(shown, rotation=30 if long_names else 0, ha="right" if long_names else "center")
        ax.set_ylim(0, 110)
        ax.set_yticks(range(0, 101, 20))
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("top-1 accuracy (%), 95 % CI")
    if title:
        fig.suptitle(title, fontsize=13)
    fig.savefig(path, dpi=150)
    return path

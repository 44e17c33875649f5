"""The one result record of every evaluation -- frozen features, fine-tuning, dense tasks -- and its Markdown table.

A :class:`Result` is one model's scores on one task of one dataset. Scores are fractions in [0, 1] (shown as
percentages); ``metrics["<name>_ci"]`` is the 95 % bootstrap interval of ``metrics["<name>"]`` where one was
computed, so a reader can tell a real gain from test-set noise. Which scores a table or a plot shows first is
:data:`HEADLINE_METRICS` of the task.

Tasks: ``knn`` and ``linear`` (frozen-feature probes), ``finetune`` and ``sskdnet`` (scene classification by
fine-tuning), ``segmentation``, ``change`` and ``detection`` (dense tasks).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rspretrain.core.json_io import jsonable

__all__ = ["BASELINE_MODEL", "HEADLINE_METRICS", "METRIC_LABELS", "Result", "format_table"]

#: Model name of the colour-statistics baseline row (see :mod:`rspretrain.downstream.frozen.image_statistics`).
BASELINE_MODEL = "image-statistics"

#: The scores shown in tables and plots for each task, headline first.
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "knn": ("accuracy",),
    "linear": ("accuracy",),
    "finetune": ("overall_accuracy", "mean_per_class_accuracy"),
    "sskdnet": ("overall_accuracy", "mean_per_class_accuracy"),
    "segmentation": ("miou", "pixel_accuracy"),
    "change": ("f1", "iou", "precision", "recall"),
    "detection": ("ap50", "ap"),
}
#: How a score is named in tables and plots.
METRIC_LABELS = {"accuracy": "accuracy", "overall_accuracy": "OA", "mean_per_class_accuracy": "mean class acc.",
                 "miou": "mIoU", "pixel_accuracy": "pixel acc.", "f1": "F1", "iou": "IoU", "precision": "precision",
                 "recall": "recall", "ap50": "AP50", "ap": "AP[.5:.95]"}
#: Tasks whose one score is named by the task in a table column (``eurosat/knn``, not ``eurosat knn accuracy``).
_SINGLE_SCORE = {"knn", "linear"}
_DENSE = {"segmentation", "change", "detection"}


@dataclass
class Result:
    """One model's scores on one task of one dataset.

    Attributes:
        model: model label (``EncoderSpec.name``, an init's name, or ``"image-statistics"``).
        task: what was scored (see the module docstring).
        dataset: dataset label.
        metrics: scores (fractions), ``<name>_ci`` intervals, per-class dicts, confusion matrices.
        n_train: training samples (images, pairs) the model saw.
        n_test: test samples scored.
        extra: settings, timings, loss history, model details.
    """

    model: str
    task: str
    dataset: str
    metrics: dict[str, Any]
    n_train: int
    n_test: int
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def accuracy(cls, model: str, dataset: str, protocol: str, accuracy: float, ci_low: float, ci_high: float,
                 n_train: int, n_test: int, extra: dict[str, Any] | None = None) -> Result:
        """A top-1 accuracy with its interval (the frozen-feature probes)."""
        return cls(model, protocol, dataset, {"accuracy": float(accuracy), "accuracy_ci": [float(ci_low),
                   float(ci_high)]}, int(n_train), int(n_test), dict(extra or {}))

    @property
    def headline(self) -> str:
        """The task's first score (e.g. ``accuracy``, ``miou``)."""
        return HEADLINE_METRICS.get(self.task, tuple(self.metrics))[0]

    def value(self, metric: str | None = None) -> float | None:
        """A score as a float (None when missing, undefined or negative, e.g. AP without any box)."""
        v = self.metrics.get(metric or self.headline)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else None

    def interval(self, metric: str | None = None) -> tuple[float, float] | None:
        """The 95 % interval of a score, or None when none was computed."""
        ci = self.metrics.get(f"{metric or self.headline}_ci")
        if ci and all(isinstance(c, (int, float)) and math.isfinite(c) for c in ci):
            return float(ci[0]), float(ci[1])
        return None

    def cell(self, metric: str | None = None) -> str:
        """``"48.1 [40.2, 55.0]"`` (percent), ``"48.1"`` without an interval, ``"-"`` when missing."""
        value = self.value(metric)
        if value is None:
            return "-"
        ci = self.interval(metric)
        return f"{100 * value:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else f"{100 * value:.1f}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (numpy scalars, arrays and paths converted; NaN as None)."""
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "metrics": dict(d["metrics"]), "extra": dict(d.get("extra", {}))})


def _ordered(values: list) -> list:
    """Unique values in order of first appearance (keeps the caller's model/dataset order in plots and tables)."""
    return list(dict.fromkeys(values))


def columns(results: list[Result]) -> list[tuple[str, str, str]]:
    """``(dataset, task, metric)`` of every score a table or plot shows, in the results' order."""
    return _ordered([(r.dataset, r.task, m) for r in results for m in HEADLINE_METRICS.get(r.task, (r.headline,))])


def column_label(dataset: str, task: str, metric: str) -> str:
    """``eurosat/knn`` (a probe's one score), ``dubai mIoU`` (a dense score names its task),
    ``ucmerced sskdnet OA`` (fine-tuning variants share their scores' names)."""
    if task in _SINGLE_SCORE:
        return f"{dataset}/{task}"
    label = METRIC_LABELS.get(metric, metric)
    return f"{dataset} {label}" if task in _DENSE else f"{dataset} {task} {label}"


def format_table(results: list[Result]) -> str:
    """Markdown table: one row per model, one column per (dataset, task, score), cells ``83.1 [82.0, 84.2]``
    (percent, 95 % interval where computed); a missing combination shows ``-``."""
    models = _ordered([r.model for r in results])
    shown = columns(results)
    cell = {(r.model, r.dataset, r.task): r for r in results}
    header = ["model"] + [column_label(*c) for c in shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(shown)) + "|"]
    for model in models:
        row = [model]
        for dataset, task, metric in shown:
            r = cell.get((model, dataset, task))
            row.append("-" if r is None else r.cell(metric))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"

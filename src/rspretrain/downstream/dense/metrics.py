"""Scores of dense predictions: IoU per class and mIoU, change F1 / IoU / precision / recall, detection AP.

- Segmentation: a confusion matrix accumulated over all test pixels (not averaged per image), IoU = TP / (TP + FP +
  FN) per class, mIoU = their mean over classes that occur in the ground truth or the prediction (the convention of
  mmsegmentation and torchmetrics' ``JaccardIndex`` with absent classes left out).
- Change detection: the change class's precision, recall, F1 and IoU from pixel counts summed over the test set, as
  in LEVIR-CD / BIT (H. Chen, Z. Qi, Z. Shi, "Remote Sensing Image Change Detection with Transformers", IEEE TGRS
  60, 2022). A ratio whose denominator is 0 is 0 (scikit-learn's ``zero_division=0``).
- Detection: COCO mean average precision at IoU 0.5 (AP50, the PASCAL VOC measure) and averaged over IoU 0.50:0.05:0.95
  (AP), from :class:`torchmetrics.detection.MeanAveragePrecision` (pycocotools backend).

Every segmentation / change score can get a percentile-bootstrap interval over test images
(:func:`bootstrap_interval`): images are resampled with replacement and the score recomputed from their summed counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from rspretrain.core.errors import ConfigError

__all__ = [
    "binary_counts",
    "bootstrap_interval",
    "change_scores",
    "confusion_matrix",
    "detection_scores",
    "iou_per_class",
    "segmentation_scores",
]


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def confusion_matrix(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class; ``ignore_index`` pixels left out.

    Raises:
        ConfigError: shapes differ, or a label outside ``[0, num_classes)`` that is not ``ignore_index``.
    """
    pred, target = _numpy(pred).ravel().astype(np.int64), _numpy(target).ravel().astype(np.int64)
    if pred.shape != target.shape:
        raise ConfigError(f"prediction has {pred.size} pixels, target {target.size}")
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    bad = (target < 0) | (target >= num_classes) | (pred < 0) | (pred >= num_classes)
    if bad.any():
        raise ConfigError(f"labels must lie in [0, {num_classes}) (or be ignore_index {ignore_index})")
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of every class from a confusion matrix; NaN for a class absent from both truth and prediction."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def segmentation_scores(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"miou", "pixel_accuracy", "per_class_iou": {name: IoU or None}}`` from a confusion matrix."""
    confusion = np.asarray(confusion)
    iou = iou_per_class(confusion)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(iou))]
    total = confusion.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_accuracy": float(np.trace(confusion) / total) if total else float("nan"),
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
    }


def binary_counts(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, ignore_index: int | None = None
) -> np.ndarray:
    """``[TP, FP, FN, TN]`` (int64) of the positive class (1) for 0/1 prediction and target maps."""
    pred, target = _numpy(pred).ravel().astype(bool), _numpy(target).ravel()
    if pred.shape != target.shape:
        raise ConfigError(f"prediction has {pred.size} pixels, target {target.size}")
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    target = target.astype(bool)
    tp = int(np.sum(pred & target))
    fp = int(np.sum(pred & ~target))
    fn = int(np.sum(~pred & target))
    return np.array([tp, fp, fn, target.size - tp - fp - fn], np.int64)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def change_scores(counts: Sequence[int] | np.ndarray) -> dict[str, float]:
    """``{"precision", "recall", "f1", "iou"}`` of the change class from ``[TP, FP, FN, TN]``."""
    tp, fp, fn, _ = (float(c) for c in counts)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
    }


def bootstrap_interval(
    per_image: np.ndarray,
    score: Callable[[np.ndarray], float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``score(summed counts)`` over images.

    Args:
        per_image: counts per test image, ``(N, ...)`` (e.g. confusion matrices or ``[TP, FP, FN, TN]`` rows).
        score: maps counts summed over a resample to the score.
        n_resamples: bootstrap resamples.
        confidence: interval coverage.
        seed: resampling seed.

    Returns:
        ``(low, high)``; both equal the point score when there is a single image.
    """
    per_image = np.asarray(per_image)
    n = len(per_image)
    if n == 0:
        raise ConfigError("bootstrap_interval needs at least one image")
    if n == 1:
        value = score(per_image[0])
        return value, value
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    # Summing via counts of each image per resample keeps this one matrix product for any count shape.
    weights = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(np.float64)
    sums = weights @ per_image.reshape(n, -1).astype(np.float64)
    values = np.array([score(s.reshape(per_image.shape[1:])) for s in sums])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def detection_scores(
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """COCO-style AP of boxes: ``{"ap50", "ap75", "ap", "ar100", "per_class_ap"}`` (fractions; -1 means undefined).

    Args:
        predictions: per image ``{"boxes": (N, 4) xyxy, "scores": (N,), "labels": (N,)}``.
        targets: per image ``{"boxes": (M, 4) xyxy, "labels": (M,)}``.
        class_names: names for ``per_class_ap`` (AP[.5:.95] per class), indexed by label.
    """
    from torchmetrics.detection import MeanAveragePrecision

    if len(predictions) != len(targets):
        raise ConfigError(f"{len(predictions)} predictions for {len(targets)} targets")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=class_names is not None,
                                  backend="pycocotools")
    metric.update(
        [{k: torch.as_tensor(p[k]).detach().cpu() for k in ("boxes", "scores", "labels")} for p in predictions],
        [{k: torch.as_tensor(t[k]).detach().cpu() for k in ("boxes", "labels")} for t in targets],
    )
    result = metric.compute()
    scores: dict[str, Any] = {
        "ap50": float(result["map_50"]),
        "ap75": float(result["map_75"]),
        "ap": float(result["map"]),
        "ar100": float(result["mar_100"]),
    }
    if class_names is not None:
        per_class = torch.atleast_1d(result["map_per_class"]).tolist()
        ids = torch.atleast_1d(result["classes"]).tolist()
        scores["per_class_ap"] = {class_names[int(i)]: float(v) for i, v in zip(ids, per_class)
                                  if 0 <= int(i) < len(class_names)}
    return scores

import math

import numpy as np
import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.downstream.dense.metrics import (
    binary_counts,
    bootstrap_interval,
    change_scores,
    confusion_matrix,
    detection_scores,
    iou_per_class,
    segmentation_scores,
)


def test_iou_and_miou_of_hand_made_masks():
    target = np.array([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 1, 2],
                     [2, 0, 0, 1]])
    cm = confusion_matrix(pred, target, 3, ignore_index=255)
    # class 0: TP 3, FP 1 (pred 0 where 2), FN 1 (pred 1 where 0) -> 3/5
    # class 1: TP 3, FP 1, FN 1 (pred 2 where 1) -> 3/5
    # class 2: TP 1, FP 1, FN 1 -> 1/3
    np.testing.assert_allclose(iou_per_class(cm), [0.6, 0.6, 1 / 3])
    scores = segmentation_scores(cm, ["a", "b", "c"])
    assert scores["miou"] == pytest.approx((0.6 + 0.6 + 1 / 3) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(7 / 10)  # two ignored pixels left out
    assert scores["per_class_iou"] == pytest.approx({"a": 0.6, "b": 0.6, "c": 1 / 3})


def test_absent_class_is_left_out_of_miou_and_matches_torchmetrics():
    from torchmetrics.functional.segmentation import mean_iou

    target = torch.tensor([[0, 0, 1], [1, 1, 0]])
    pred = torch.tensor([[0, 1, 1], [1, 1, 0]])
    cm = confusion_matrix(pred, target, 4)
    iou = iou_per_class(cm)
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    scores = segmentation_scores(cm)
    assert scores["per_class_iou"]["2"] is None
    # class 0: 2/3, class 1: 3/4
    assert scores["miou"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    reference = mean_iou(pred[None], target[None], num_classes=4, include_background=True, per_class=True,
                         input_format="index")
    np.testing.assert_allclose(reference[0, :2].numpy(), iou[:2], rtol=1e-6)


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ConfigError):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ConfigError):
        confusion_matrix(np.array([0]), np.array([0, 1]), 3)


def test_change_scores_of_hand_made_maps():
    target = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])
    pred = np.array([[1, 0, 1, 0], [1, 0, 0, 0]])
    counts = binary_counts(pred, target)
    assert counts.tolist() == [2, 1, 1, 4]  # TP, FP, FN, TN
    scores = change_scores(counts)
    assert scores == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "iou": 0.5})
    assert change_scores([0, 0, 5, 10]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "iou": 0.0}


def test_bootstrap_interval_brackets_the_point_and_collapses_for_equal_images():
    per_image = np.array([[2, 1, 1, 4], [5, 0, 5, 10], [1, 3, 0, 7]])
    point = change_scores(per_image.sum(0))["f1"]
    low, high = bootstrap_interval(per_image, lambda c: change_scores(c)["f1"], n_resamples=500, seed=1)
    assert low <= point <= high and low < high
    same = np.repeat(per_image[:1], 4, axis=0)
    low, high = bootstrap_interval(same, lambda c: change_scores(c)["f1"], n_resamples=200)
    assert low == pytest.approx(high) == pytest.approx(change_scores(per_image[0])["f1"])


def _det(boxes, scores=None, labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    out = {"boxes": boxes, "labels": torch.tensor(labels if labels is not None else [0] * len(boxes))}
    if scores is not None:
        out["scores"] = torch.tensor(scores, dtype=torch.float32)
    return out


def test_detection_ap_of_known_boxes():
    target = [_det([[0, 0, 100, 100]])]
    perfect = detection_scores([_det([[0, 0, 100, 100]], [0.9])], target)
    assert perfect["ap50"] == pytest.approx(1.0) and perfect["ap"] == pytest.approx(1.0)
    # IoU 0.62 passes the thresholds 0.50, 0.55 and 0.60 of ten: AP50 = 1, AP[.5:.95] = 0.3.
    shifted = detection_scores([_det([[0, 0, 100, 62]], [0.9])], target)
    assert shifted["ap50"] == pytest.approx(1.0) and shifted["ap"] == pytest.approx(0.3)
    # A confident false positive ranked above the true one halves the precision at full recall.
    ranked = detection_scores([_det([[200, 200, 250, 250], [0, 0, 100, 100]], [0.9, 0.8])],
                              [_det([[0, 0, 100, 100], [300, 300, 320, 320]])], class_names=["tree"])
    # recall 0.5 reached at precision 0.5 only; COCO 101-point interpolation: 51 points at 0.5 -> 0.2525
    assert ranked["ap50"] == pytest.approx(51 * 0.5 / 101, abs=1e-4)
    assert ranked["per_class_ap"]["tree"] == pytest.approx(ranked["ap"])
    nothing = detection_scores([_det([], [])], target)
    assert nothing["ap50"] == 0.0

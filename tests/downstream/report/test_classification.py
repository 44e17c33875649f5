import numpy as np
import pytest

from rspretrain.core.errors import DataError
from rspretrain.downstream.report.classification import classification_scores, plot_confusion_matrix


def test_scores_confusion_matrix_and_per_class_accuracy(tmp_path):
    classes = ["a", "b", "c", "d"]  # "d" never occurs in the test set
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    y_pred = np.array([0, 0, 1, 1, 1, 2, 3, 2, 2, 0])
    s = classification_scores(y_true, y_pred, classes)
    cm = np.array(s["confusion_matrix"])
    assert cm.shape == (4, 4) and cm.sum() == len(y_true) == s["n_test"]
    assert cm[0, 1] == 1 and cm[2, 3] == 1 and np.trace(cm) == 8
    assert s["overall_accuracy"] == pytest.approx(0.8)
    lo, hi = s["overall_accuracy_ci"]
    assert lo <= 0.8 <= hi
    assert s["per_class_accuracy"] == {"a": 0.75, "b": 1.0, "c": 0.75, "d": None}
    assert s["mean_per_class_accuracy"] == pytest.approx((0.75 + 1.0 + 0.75) / 3)
    png = plot_confusion_matrix(cm, classes, tmp_path / "cm.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_are_data_errors():
    with pytest.raises(DataError, match="outside"):
        classification_scores([0, 5], [0, 1], ["a", "b"])
    with pytest.raises(DataError, match="equal-length"):
        classification_scores([0, 1], [0], ["a", "b"])

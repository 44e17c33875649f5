import numpy as np
import pytest

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.downstream.frozen.linear_probe import linear_probe_predict


def _blobs(n_per_class: int, centres: np.ndarray, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, spread, (n_per_class, centres.shape[1])) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(len(centres)), n_per_class)


CENTRES = np.array([[4.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [0, 0, 4.0, 0, 0]])


def test_separable_data_is_classified_perfectly():
    train_x, train_y = _blobs(30, CENTRES, 0.5, seed=0)
    test_x, test_y = _blobs(20, CENTRES, 0.5, seed=1)
    pred = linear_probe_predict(train_x, train_y, test_x)
    assert pred.dtype == np.int64 and pred.shape == (60,)
    assert (pred == test_y).mean() == 1.0


def test_deterministic_and_keeps_label_values():
    train_x, train_y = _blobs(30, CENTRES, 3.0, seed=0)  # overlapping classes: the fit actually has to decide
    test_x, _ = _blobs(30, CENTRES, 3.0, seed=1)
    labels = np.array([3, 7, 11])[train_y]
    a = linear_probe_predict(train_x, labels, test_x, seed=5)
    b = linear_probe_predict(train_x, labels, test_x, seed=5)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {3, 7, 11} and len(np.unique(a)) == 3


def test_standardisation_makes_feature_scale_irrelevant():
    # StandardScaler is fitted on train: multiplying every feature column by its own constant yields identical
    # standardised inputs, hence identical predictions. Without standardisation the L2 penalty would act differently.
    train_x, train_y = _blobs(40, CENTRES, 3.0, seed=0)
    test_x, _ = _blobs(40, CENTRES, 3.0, seed=1)
    scale = np.array([1e-3, 1.0, 1e3, 10.0, 1e-2], dtype=np.float32)
    np.testing.assert_array_equal(
        linear_probe_predict(train_x * scale, train_y, test_x * scale, C=0.01),
        linear_probe_predict(train_x, train_y, test_x, C=0.01),
    )


def test_errors():
    x, y = _blobs(5, CENTRES, 0.5, seed=0)
    with pytest.raises(DataError, match="two classes"):
        linear_probe_predict(x, np.zeros(len(x), dtype=np.int64), x)
    with pytest.raises(DataError):
        linear_probe_predict(x, y, x[:, :3])
    with pytest.raises(ConfigError):
        linear_probe_predict(x, y, x, C=0.0)


def test_non_convergence_is_one_line_of_ours_not_sklearns_warning(caplog):
    import logging
    import warnings

    x, y = _blobs(30, CENTRES, 3.0, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's ConvergenceWarning would raise here
        with caplog.at_level(logging.WARNING, logger="rspretrain"):
            pred = linear_probe_predict(x, y, x, max_iter=1)
    assert pred.shape == y.shape
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "stopped at max_iter 1 before converging" in lines[0]

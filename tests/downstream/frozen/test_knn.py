import math

import numpy as np
import pytest
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.downstream.frozen.knn import knn_predict


def _at(*angles: float) -> np.ndarray:
    """Unit vectors in the plane at the given angles (radians)."""
    return np.array([[math.cos(a), math.sin(a)] for a in angles], dtype=np.float32)


def test_two_clusters():
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.normal([5, 0], 0.5, (10, 2)), rng.normal([0, 5], 0.5, (10, 2))]).astype(np.float32)
    labels = np.repeat([0, 1], 10)
    test = np.array([[4, 1], [1, 4], [6, -0.5], [-0.3, 7]], dtype=np.float32)
    pred = knn_predict(train, labels, test, num_classes=2, k=5)
    assert pred.dtype == np.int64
    np.testing.assert_array_equal(pred, [0, 1, 0, 1])


def test_temperature_weighting_beats_majority_count():
    # Query at angle 0. Neighbours: one class-0 point at 0.1 rad (cos 0.995) and two class-1 points at 0.5 / 0.55 rad
    # (cos 0.878 / 0.853). With T = 0.07 the single close vote weighs exp((0.995 - 0.878) / 0.07) ~ 5.3 times each
    # far vote, so class 0 wins 1 vote against 2; with T = 100 all weights are ~1 and the count (class 1) wins.
    train = _at(0.1, 0.5, 0.55, math.pi)
    labels = np.array([0, 1, 1, 0])
    query = _at(0.0)
    assert knn_predict(train, labels, query, num_classes=2, k=3, temperature=0.07)[0] == 0
    assert knn_predict(train, labels, query, num_classes=2, k=3, temperature=100.0)[0] == 1
    # Hand check of the weights: class 0 gets exp(cos(0.1)/T), class 1 gets exp(cos(0.5)/T) + exp(cos(0.55)/T).
    w0 = math.exp(math.cos(0.1) / 0.07)
    w1 = math.exp(math.cos(0.5) / 0.07) + math.exp(math.cos(0.55) / 0.07)
    assert w0 > w1


def test_only_k_nearest_vote():
    # With k = 1 only the closest point (class 0) votes; with k = 3 the two class-1 points outvote it at high T.
    train = _at(0.0, 0.3, 0.35)
    labels = np.array([0, 1, 1])
    assert knn_predict(train, labels, _at(0.0), 2, k=1, temperature=100.0)[0] == 0
    assert knn_predict(train, labels, _at(0.0), 2, k=3, temperature=100.0)[0] == 1


def test_small_temperature_is_one_nearest_neighbour_and_finite():
    train = _at(0.05, 0.2, 0.25, 0.3)
    labels = np.array([2, 0, 0, 0])
    assert knn_predict(train, labels, _at(0.0), 3, k=4, temperature=1e-3)[0] == 2


def test_k_larger_than_train_is_clamped():
    train = _at(0.0, 0.2, 2.0)
    labels = np.array([0, 0, 1])
    test = _at(0.1, 2.1)
    np.testing.assert_array_equal(knn_predict(train, labels, test, 2, k=100), knn_predict(train, labels, test, 2, k=3))
    np.testing.assert_array_equal(knn_predict(train, labels, test, 2, k=100), [0, 1])  # T=0.07: closest dominates
    # At a high temperature all 3 clamped neighbours vote ~equally, so the 2 class-0 points outvote the close one.
    np.testing.assert_array_equal(knn_predict(train, labels, test, 2, k=100, temperature=100.0), [0, 0])


def test_cosine_is_scale_invariant_and_chunking_is_exact():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(200, 16)).astype(np.float32)
    labels = rng.integers(0, 5, 200)
    test = rng.normal(size=(37, 16)).astype(np.float32)
    reference = knn_predict(train, labels, test, 5, k=10)
    scales = rng.uniform(0.1, 10, (200, 1)).astype(np.float32)
    np.testing.assert_array_equal(knn_predict(train * scales, labels, test * 3, 5, k=10), reference)
    np.testing.assert_array_equal(knn_predict(train, labels, test, 5, k=10, chunk_size=4), reference)


def test_matches_lightly_reference_implementation():
    benchmarking = pytest.importorskip("lightly.utils.benchmarking")
    rng = np.random.default_rng(2)
    train = rng.normal(size=(300, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 300)
    test = rng.normal(size=(50, 8)).astype(np.float32)
    bank = torch.nn.functional.normalize(torch.from_numpy(train), dim=1).T
    query = torch.nn.functional.normalize(torch.from_numpy(test), dim=1)
    ref = benchmarking.knn_predict(query, bank, torch.from_numpy(labels), num_classes=4, knn_k=20, knn_t=0.07)[:, 0]
    np.testing.assert_array_equal(knn_predict(train, labels, test, 4, k=20, temperature=0.07), ref.numpy())


@pytest.mark.parametrize(("kwargs", "error"), [({"k": 0}, ConfigError), ({"temperature": 0.0}, ConfigError)])
def test_bad_parameters(kwargs, error):
    with pytest.raises(error):
        knn_predict(_at(0.0), np.array([0]), _at(0.0), 1, **kwargs)


def test_bad_data():
    with pytest.raises(DataError, match="num_classes"):
        knn_predict(_at(0.0, 1.0), np.array([0, 2]), _at(0.0), num_classes=2)
    with pytest.raises(DataError):
        knn_predict(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), _at(0.0), num_classes=2)
    with pytest.raises(DataError):
        knn_predict(_at(0.0), np.array([0]), np.zeros((1, 3), np.float32), num_classes=1)

import numpy as np
import pytest

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.downstream.report.bootstrap import bootstrap_accuracy


def _outcomes(n_correct: int, n: int) -> np.ndarray:
    return np.arange(n) < n_correct


def test_degenerate_cases():
    assert bootstrap_accuracy(np.ones(50, dtype=bool)) == (1.0, 1.0, 1.0)
    assert bootstrap_accuracy(np.zeros(50, dtype=bool)) == (0.0, 0.0, 0.0)


def test_interval_contains_estimate_and_matches_binomial_width():
    acc, lo, hi = bootstrap_accuracy(_outcomes(80, 100))
    assert acc == 0.8
    assert lo < acc < hi
    # Binomial(100, 0.8): 95 % of the mass lies within about +-1.96 * sqrt(0.8 * 0.2 / 100) = +-0.078.
    assert lo == pytest.approx(0.72, abs=0.015)
    assert hi == pytest.approx(0.88, abs=0.015)


def test_width_shrinks_with_n():
    _, lo_small, hi_small = bootstrap_accuracy(_outcomes(80, 100))
    _, lo_big, hi_big = bootstrap_accuracy(_outcomes(8000, 10000))
    assert hi_big - lo_big < (hi_small - lo_small) / 5  # width scales as 1/sqrt(n): 10x narrower expected


def test_equals_explicit_index_resampling():
    # The shortcut (drawing Binomial(n, p) / n) must give the same interval as resampling test indices.
    correct = _outcomes(170, 230)
    rng = np.random.default_rng(123)
    explicit = correct[rng.integers(0, correct.size, (20000, correct.size))].mean(axis=1)
    ref_lo, ref_hi = np.quantile(explicit, [0.025, 0.975])
    _, lo, hi = bootstrap_accuracy(correct, n_resamples=20000)
    assert lo == pytest.approx(ref_lo, abs=0.006)
    assert hi == pytest.approx(ref_hi, abs=0.006)


def test_deterministic_by_seed_and_confidence_orders_intervals():
    correct = _outcomes(61, 97)
    assert bootstrap_accuracy(correct, seed=3) == bootstrap_accuracy(correct, seed=3)
    assert len({bootstrap_accuracy(correct, seed=s)[1:] for s in range(5)}) > 1
    _, lo90, hi90 = bootstrap_accuracy(correct, confidence=0.90)
    _, lo99, hi99 = bootstrap_accuracy(correct, confidence=0.99)
    assert lo99 < lo90 and hi90 < hi99


def test_errors():
    with pytest.raises(DataError):
        bootstrap_accuracy(np.array([], dtype=bool))
    with pytest.raises(ConfigError):
        bootstrap_accuracy(np.ones(3, dtype=bool), confidence=1.0)
    with pytest.raises(ConfigError):
        bootstrap_accuracy(np.ones(3, dtype=bool), n_resamples=0)

import numpy as np
import pytest

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.downstream.report.bootstrap import bootstrap_accuracy, bootstrap_paired_difference


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


def test_paired_difference_of_identical_arms_is_exactly_zero():
    rng = np.random.default_rng(0)
    a = rng.random((3, 500)) < 0.7
    assert bootstrap_paired_difference(a, a.copy()) == (0.0, 0.0, 0.0)


def test_paired_difference_detects_a_shift_and_pairing_narrows_the_interval():
    """b fixes 5 % of a's errors on every seed: +~1.5 points, the interval excludes zero; the same difference
    between arms whose errors are independent draws has a wider interval (pairing cancels shared difficulty)."""
    rng = np.random.default_rng(1)
    a = rng.random((3, 2000)) < 0.7
    b = a | (rng.random(a.shape) < 0.05)
    diff, low, high = bootstrap_paired_difference(a, b, seed=0)
    assert diff == pytest.approx((b.mean() - a.mean()))
    assert 0 < low < diff < high
    independent = rng.random(a.shape) < b.mean()
    _, low_i, high_i = bootstrap_paired_difference(a, independent, seed=0)
    assert high - low < (high_i - low_i) / 2


def test_paired_difference_resamples_seeds_too():
    """Two seeds that disagree in sign: the interval spans both seeds' differences, wider than one seed's."""
    rng = np.random.default_rng(2)
    a = rng.random((2, 3000)) < 0.6
    b = a.copy()
    b[0, :300] = True  # seed 0: b better
    b[1, :300] = False  # seed 1: b worse
    diff, low, high = bootstrap_paired_difference(a, b, seed=0)
    assert low < 0 < high
    one_seed = bootstrap_paired_difference(a[:1], b[:1], seed=0)
    assert one_seed[1] > 0  # on seed 0 alone the gain is clear


def test_paired_difference_errors():
    with pytest.raises(DataError, match="one shape"):
        bootstrap_paired_difference(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(DataError):
        bootstrap_paired_difference(np.ones(3), np.ones(3))
    with pytest.raises(ConfigError):
        bootstrap_paired_difference(np.ones((2, 3)), np.ones((2, 3)), n_resamples=0)

"""Percentile-bootstrap confidence interval of a classification accuracy.

Test sets of remote-sensing benchmarks are small (UC Merced: 420 images), so a one-point difference between two
backbones can be noise. We report every accuracy with a percentile-bootstrap interval over test samples (Efron &
Tibshirani 1993, "An Introduction to the Bootstrap", Ch. 13): resample the n test outcomes with replacement, recompute
the accuracy, and take the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of those accuracies.
"""

from __future__ import annotations

import numpy as np

from rspretrain.core.errors import ConfigError, DataError

__all__ = ["bootstrap_accuracy", "bootstrap_paired_difference"]


def bootstrap_accuracy(
    correct: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Accuracy and its percentile-bootstrap confidence interval (Efron & Tibshirani 1993).

    Resampling n booleans with k ``True`` with replacement and averaging gives exactly ``Binomial(n, k / n) / n``, so
    the resampled accuracies are drawn from that distribution directly: the same bootstrap distribution as drawing
    ``n_resamples x n`` indices, in O(n_resamples) time and memory. (This is still the bootstrap, not a normal
    approximation; e.g. an all-correct test set gives the degenerate interval [1, 1].)

    Args:
        correct: Per-test-sample correctness (n,), bool or 0/1.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval, in (0, 1).
        seed: Seed of the resampling generator.

    Returns:
        ``(accuracy, ci_low, ci_high)`` as fractions in [0, 1].

    Raises:
        ConfigError: ``n_resamples`` < 1 or ``confidence`` outside (0, 1).
        DataError: ``correct`` is empty or not 1-D.
    """
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    correct = np.asarray(correct)
    if correct.ndim != 1 or correct.size == 0:
        raise DataError(f"bootstrap needs a non-empty 1-D array of per-sample correctness, got shape {correct.shape}")
    correct = correct.astype(bool)
    n = correct.size
    accuracy = float(correct.mean())
    resampled = np.random.default_rng(seed).binomial(n, accuracy, size=n_resamples) / n
    alpha = (1.0 - confidence) / 2.0
    ci_low, ci_high = np.quantile(resampled, [alpha, 1.0 - alpha])
    return accuracy, float(ci_low), float(ci_high)


def bootstrap_paired_difference(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean accuracy difference ``b - a`` of two arms scored on the same test images in paired runs (one row per
    seed), with a two-level percentile bootstrap: runs resampled with replacement, then test images, the same draws
    for both arms (so what the arms share, the seed's luck and the images' difficulty, cancels out).

    Args:
        correct_a, correct_b: ``(runs, images)`` per-image correctness of each arm; row i of both comes from the
            same seed (data order, augmentation draws, initial weights).
        n_resamples: bootstrap resamples.
        confidence: coverage of the interval, in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``(difference, ci_low, ci_high)`` as fractions (``+0.01`` = one point more accuracy for ``b``).

    Raises:
        ConfigError: ``n_resamples`` < 1 or ``confidence`` outside (0, 1).
        DataError: the arrays differ in shape or are not ``(runs, images)`` with both non-empty.
    """
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.shape != b.shape or a.ndim != 2 or 0 in a.shape:
        raise DataError(f"paired correctness must be two (runs, images) arrays of one shape, got {a.shape} and "
                        f"{b.shape}")
    d = b.astype(np.float64) - a.astype(np.float64)
    runs, images = d.shape
    rng = np.random.default_rng(seed)
    resampled = np.empty(n_resamples)
    for start in range(0, n_resamples, 256):  # image weights in chunks: 256 x images counts at a time
        n = min(256, n_resamples - start)
        run_w = rng.multinomial(runs, np.full(runs, 1 / runs), size=n)  # (n, runs)
        image_w = rng.multinomial(images, np.full(images, 1 / images), size=n)  # (n, images)
        resampled[start:start + n] = np.einsum("kr,ri,ki->k", run_w, d, image_w) / (runs * images)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha])
    return float(d.mean()), float(low), float(high)

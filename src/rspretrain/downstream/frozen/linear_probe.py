"""Linear probe: a multinomial logistic regression on frozen, standardised features.

Training a linear classifier on top of a frozen encoder is the standard way self-supervised representations are
compared (Zhang et al. 2016, "Colorful Image Colorization"; He et al. 2020, MoCo, Sec. 4.1; Chen et al. 2020, SimCLR,
Sec. 4). For transfer to small downstream sets we follow the variant SimCLR took from Kornblith et al. 2019 ("Do Better
ImageNet Models Transfer Better?"): an L2-regularised multinomial logistic regression fitted with L-BFGS on
precomputed features without augmentation, rather than SGD on a linear layer -- on a few thousand samples this is
deterministic, has no learning-rate schedule to tune, and converges in seconds on a CPU. Features are standardised
first (our choice) because raw backbone features differ in scale by orders of magnitude, which slows L-BFGS and makes
one ``C`` mean different things for different backbones.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from rspretrain.core.errors import ConfigError, DataError

__all__ = ["linear_probe_predict"]

log = logging.getLogger("rspretrain")


def linear_probe_predict(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    C: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Fit a linear probe on train features and predict test labels.

    Features are standardised with statistics of the training set only (the test set must not leak into the
    probe), then a multinomial logistic regression (lbfgs) is fitted.

    Args:
        train_features: Training features (N, D).
        train_labels: Training labels (N,).
        test_features: Test features (M, D).
        C: Inverse L2 regularisation strength.
        max_iter: L-BFGS iteration cap.
        seed: ``random_state`` of the solver (lbfgs itself is deterministic; kept so results are reproducible if
            the solver changes).

    Returns:
        Predicted labels (M,), int64, in the label space of ``train_labels``.

    Raises:
        ConfigError: ``C`` or ``max_iter`` out of range.
        DataError: Mismatched shapes, or fewer than two classes in the training labels.
    """
    if C <= 0:
        raise ConfigError(f"linear probe C must be > 0, got {C}")
    if max_iter < 1:
        raise ConfigError(f"linear probe max_iter must be >= 1, got {max_iter}")
    train = np.asarray(train_features, dtype=np.float64)
    test = np.asarray(test_features, dtype=np.float64)
    labels = np.asarray(train_labels).astype(np.int64)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise DataError(
            f"linear probe needs 2-D features of equal width, got train {train.shape}, test {test.shape}"
        )
    if labels.shape != (train.shape[0],):
        raise DataError(f"linear probe: {train.shape[0]} training features but train_labels has shape {labels.shape}")
    if np.unique(labels).size < 2:
        raise DataError("linear probe needs training samples from at least two classes")

    scaler = StandardScaler().fit(train)
    classifier = LogisticRegression(C=C, max_iter=max_iter, solver="lbfgs", random_state=seed)
    # sklearn's ConvergenceWarning is several lines of advice about scaling (the features are scaled); one line of
    # ours says what it means for the score instead.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(scaler.transform(train), labels)
    for w in caught:  # any other warning is passed on as it was
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("linear probe: L-BFGS stopped at max_iter %d before converging; the score may be slightly low",
                    max_iter)
    return classifier.predict(scaler.transform(test)).astype(np.int64)

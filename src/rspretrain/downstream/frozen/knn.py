"""Weighted k-nearest-neighbour classification on frozen features.

This is the non-parametric evaluation of Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination" (CVPR), Sec. 3.5: features are L2-normalised, the k training samples with the highest cosine
similarity vote, and each vote is weighted by ``exp(sim / temperature)``. DINO (Caron et al. 2021, ``eval_knn.py``)
and lightly (``lightly.utils.benchmarking.knn_predict``) implement the same rule; our defaults ``k=20,
temperature=0.07`` are DINO's (lightly defaults to ``k=200, t=0.1``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rspretrain.core.errors import ConfigError, DataError

__all__ = ["knn_predict"]


def knn_predict(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Predict test labels by temperature-weighted cosine kNN (Wu et al. 2018; DINO; lightly).

    Args:
        train_features: Training features (N, D).
        train_labels: Training labels (N,), integers in ``[0, num_classes)``.
        test_features: Test features (M, D).
        num_classes: Number of classes.
        k: Neighbours that vote; clamped to N when larger.
        temperature: Softness of the vote weights ``exp(sim / temperature)``; small values approach 1-NN, large
            values approach an unweighted majority vote.
        chunk_size: Test rows scored at once; bounds memory to ``chunk_size * N`` similarities.

    Returns:
        Predicted labels (M,), int64. Ties go to the lower class index.

    Raises:
        ConfigError: ``k``, ``temperature``, ``chunk_size`` or ``num_classes`` out of range.
        DataError: Empty training set, mismatched shapes, or labels outside ``[0, num_classes)``.
    """
    if k < 1:
        raise ConfigError(f"knn k must be >= 1, got {k}")
    if temperature <= 0:
        raise ConfigError(f"knn temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ConfigError(f"knn chunk_size must be >= 1, got {chunk_size}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    train = torch.as_tensor(np.asarray(train_features), dtype=torch.float32)
    test = torch.as_tensor(np.asarray(test_features), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        shapes = f"train {tuple(train.shape)}, test {tuple(test.shape)}"
        raise DataError(f"knn needs 2-D features of equal width, got {shapes}")
    if train.shape[0] == 0:
        raise DataError("knn needs at least one training sample")
    if labels.shape != (train.shape[0],):
        raise DataError(f"knn: {train.shape[0]} training features but train_labels has shape {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        span = f"[{int(labels.min())}, {int(labels.max())}]"
        raise DataError(f"knn: train labels span {span} but num_classes={num_classes}")

    k = min(k, train.shape[0])
    train = F.normalize(train, dim=1)
    test = F.normalize(test, dim=1)
    predictions = torch.empty(test.shape[0], dtype=torch.long)
    for start in range(0, test.shape[0], chunk_size):
        sim = test[start : start + chunk_size] @ train.T  # (m, N) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)
        # Subtracting each row's best similarity rescales all its votes by one constant, which leaves the argmax
        # unchanged but keeps exp() finite for small temperatures (exp(1 / 0.01) overflows float32).
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
        votes = torch.zeros(top_sim.shape[0], num_classes, dtype=torch.float32)
        votes.scatter_add_(1, labels[top_idx], weights)
        predictions[start : start + chunk_size] = votes.argmax(dim=1)
    return predictions.numpy()

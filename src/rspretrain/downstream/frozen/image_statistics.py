"""Hand-crafted per-band colour statistics: the trivial baseline every backbone must beat.

Many remote-sensing scene classes are separable by colour alone (water is dark blue, forest dark green, annual crop
bright), so "accuracy above chance" says little about a backbone. Colour-histogram / colour-moment features are the
classic global descriptors on these benchmarks (e.g. the colour-histogram baselines in Yang & Newsam 2010, UC Merced;
Cheng et al. 2017, "Remote Sensing Image Scene Classification: Benchmark and State of the Art", NWPU-RESISC45),
and scoring them through the very same kNN / linear-probe protocol shows how much a learned encoder adds over colour.

Features per band, in this order: mean, population standard deviation, and the 5th/25th/50th/75th/95th percentiles
(numpy's default linear interpolation) of the pixel values scaled to [0, 1] by the dataset's ``value_scale``. The
feature vector is band-major: ``[band0 stats (7), band1 stats (7), ...]``.
"""

from __future__ import annotations

import numpy as np
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.downstream.frozen.features import SceneDataset

__all__ = ["IMAGE_STATISTICS_NAMES", "PERCENTILES", "image_statistics_features", "image_statistics_feature_names"]

PERCENTILES: tuple[float, ...] = (5.0, 25.0, 50.0, 75.0, 95.0)
IMAGE_STATISTICS_NAMES: tuple[str, ...] = ("mean", "std") + tuple(f"p{int(q)}" for q in PERCENTILES)

# Pixels (images x bands x H x W) turned into float64 at once: ~32 MB, so a 1024-image batch of 256 px UC Merced
# scenes (200 M values) never materialises as a 1.6 GB float64 array.
_MAX_VALUES_PER_CHUNK = 1 << 22


def image_statistics_feature_names(band_names: tuple[str, ...] | list[str]) -> list[str]:
    """Names of the feature columns, e.g. ``["red/mean", "red/std", "red/p5", ...]``."""
    return [f"{band}/{stat}" for band in band_names for stat in IMAGE_STATISTICS_NAMES]


def _statistics(images: np.ndarray, value_scale: float) -> np.ndarray:
    """Per-band statistics of raw images (B, C, H, W) -> (B, C * 7) float64."""
    b, c = images.shape[:2]
    x = images.reshape(b, c, -1).astype(np.float64) / value_scale
    stats = np.concatenate(
        [
            x.mean(axis=-1)[..., None],
            x.std(axis=-1)[..., None],
            np.moveaxis(np.percentile(x, PERCENTILES, axis=-1), 0, -1),
        ],
        axis=-1,
    )
    return stats.reshape(b, c * len(IMAGE_STATISTICS_NAMES))


def image_statistics_features(dataset: SceneDataset, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-band colour statistics of every image of a scene dataset.

    Args:
        dataset: Scene dataset (``__len__``, ``__getitems__``, ``value_scale``; see :mod:`rspretrain.data`).
        batch_size: Images fetched from the dataset at once (computation is further chunked to bound memory).

    Returns:
        ``(features, labels)``: float32 array (N, 7 * C) laid out as described in the module docstring, and int64
        labels (N,), in dataset order.

    Raises:
        ConfigError: ``batch_size`` < 1.
        DataError: The dataset is empty.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    if n == 0:
        raise DataError("cannot compute image statistics of an empty dataset")
    value_scale = float(dataset.value_scale)
    features: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for start in range(0, n, batch_size):
        batch = dataset.__getitems__(list(range(start, min(start + batch_size, n))))
        images = torch.as_tensor(batch["image"]).cpu().numpy()
        per_image = max(1, int(np.prod(images.shape[1:])))
        step = max(1, _MAX_VALUES_PER_CHUNK // per_image)
        for i in range(0, images.shape[0], step):
            features.append(_statistics(images[i : i + step], value_scale))
        labels.append(torch.as_tensor(batch["label"]).long().cpu().numpy())
    return np.concatenate(features).astype(np.float32), np.concatenate(labels)

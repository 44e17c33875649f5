"""Per-band mean and std of a dataset's images in the [0, 1] value range (its values divided by ``value_scale``).

The statistics the methods normalise with: measured on the training images by the in-memory path, and once, at
preparation, for prepared raster tiles (so a streamed run normalises exactly as the in-memory run of the same scenes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rspretrain.core.errors import DataError


@torch.no_grad()
def band_statistics(
    dataset, max_images: int = 2000, seed: int = 0, chunk: int = 128
) -> tuple[list[float], list[float]]:
    """Per-band mean and std of the images scaled by ``value_scale``, over a random subset.

    Streams ``chunk`` images at a time and accumulates sums in float64, so memory stays at one
    chunk whatever the image size.
    """
    n = len(dataset)
    if n == 0:
        raise DataError(f"{getattr(dataset, 'source', 'dataset')}: no images to compute band statistics from")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[: min(n, max_images)].tolist()
    scale = float(getattr(dataset, "value_scale", 255.0))
    total = total_sq = None
    count = 0
    for start in range(0, len(idx), chunk):
        x = dataset.__getitems__(idx[start : start + chunk])["image"].to(torch.float32) / scale
        s, sq = x.sum(dim=(0, 2, 3)).double(), x.square().sum(dim=(0, 2, 3)).double()
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.tolist(), std.tolist()


def array_band_statistics(images: Sequence[np.ndarray], value_scale: float, where: str = "images"
                          ) -> tuple[list[float], list[float]]:
    """Per-band mean and std of in-memory ``(C, H, W)`` images of any sizes (a dense task's training images), their
    values divided by ``value_scale``; every pixel counts once. Sums in float64, one image at a time."""
    if not images:
        raise DataError(f"{where}: no images to compute band statistics from")
    total = total_sq = 0.0
    count = 0
    for image in images:
        x = np.asarray(image, dtype=np.float64) / value_scale
        total = total + x.sum(axis=(1, 2))
        total_sq = total_sq + np.square(x).sum(axis=(1, 2))
        count += x.shape[1] * x.shape[2]
    mean = total / count
    std = np.sqrt(np.clip(total_sq / count - np.square(mean), 0, None)).clip(min=1e-6)
    return mean.tolist(), std.tolist()

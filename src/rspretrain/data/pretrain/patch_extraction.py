"""GeoKR's patch extraction: the per-scene percentile stretch to 8 bits and the dark / low-contrast / cloud filters.

The official pipeline (W. Li, K. Chen, H. Chen, Z. Shi, "Geographical Knowledge-Driven Representation Learning for
Remote Sensing Images", IEEE TGRS 60, 2022; code ``tool/crop_images.py``; METHODS.md §3.2 step 1) maps each Gaofen
scene to 8 bits with the 1st and 99th percentiles of its non-zero pixels, estimated on a 20x downsampled copy, and
drops a patch when, on its band-mean image,

- the maximum is below 20 (``"dark"``),
- more than 10 % of the pixels are below 20 (``"dark_pixels"``: nodata or shadow),
- scikit-image's ``is_low_contrast`` holds (``"low_contrast"``), or
- more than 50 % of the pixels are above 230 (``"cloud"``).

:class:`~rspretrain.data.RasterTiles` applies them with ``stretch="percentile"`` and ``patch_filters=True``:
:func:`stretch_limits` once per scene, :func:`apply_stretch` to each tile as it is read, :func:`patch_filter_reasons`
to the candidate tiles.

Choices where METHODS.md leaves one:

- the percentiles are taken **per band** (a shared pair would let one bright band, e.g. NIR, wash out the others);
  pixels that are nodata in the image are left out with the zeros and stay 0;
- stretched values are truncated to integers (``astype(uint8)`` after clipping to [0, 255]); the scene is not
  stored stretched: each tile is stretched as it is read, with the scene's limits (:func:`stretch_limits`);
- ``is_low_contrast`` is its default test (``fraction_threshold`` 0.05, percentiles 1 and 99, ratio of the
  percentile range to the dtype range) on the band mean as an 8-bit image, i.e. a 1-99 % range below 12.75
  grey levels; it is written out here (three lines) instead of adding scikit-image as a dependency.
"""

from __future__ import annotations

import numpy as np

from rspretrain.core.errors import DataError

#: Why a patch was dropped, in the order the filters are tested; a patch counts under its first reason.
FILTER_REASONS = ("dark", "dark_pixels", "low_contrast", "cloud")

#: The percentiles are estimated on every 20th row and column of the scene, as in the official code.
PERCENTILE_SUBSAMPLE = 20


def stretch_limits(
    sample: np.ndarray,
    valid: np.ndarray,
    low: float = 1.0,
    high: float = 99.0,
    name: str = "raster",
) -> np.ndarray:
    """float64 ``(C, 2)``: each band's ``low`` and ``high`` percentiles over the non-zero valid pixels of ``sample``.

    Args:
        sample: ``(C, h, w)`` pixel values, e.g. every 20th row and column of the scene (the official estimate).
        valid: ``(h, w)`` bool, False where the image is nodata.
        low, high: the percentiles.
        name: for the error message.

    Raises:
        DataError: a band with no non-zero valid pixel in the sample.
    """
    limits = np.empty((sample.shape[0], 2), dtype=np.float64)
    for band in range(sample.shape[0]):
        values = sample[band][valid]
        values = values[values != 0]
        if not values.size:
            raise DataError(f"{name}: band {band + 1} has no non-zero pixel to stretch from")
        limits[band] = np.percentile(values.astype(np.float64), [low, high])
    return limits


def apply_stretch(values: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """float32 ``(C, h, w)`` of integers 0-255: ``values`` mapped linearly from each band's ``limits`` to 0-255,
    clipped and truncated (as ``astype(uint8)`` would store them)."""
    low = limits[:, :1, None].astype(np.float32)
    scale = (255.0 / np.maximum(limits[:, 1:, None] - limits[:, :1, None], np.finfo(np.float32).eps)).astype(np.float32)
    out = (values.astype(np.float32) - low) * scale
    np.clip(out, 0.0, 255.0, out=out)
    return np.floor(out, out=out)


def patch_filter_reasons(
    band_means: np.ndarray,
    dark: float = 20.0,
    dark_fraction: float = 0.10,
    bright: float = 230.0,
    bright_fraction: float = 0.50,
    contrast_threshold: float = 0.05,
) -> np.ndarray:
    """int8 ``(N,)``: for each 8-bit band-mean patch of ``band_means`` ``(N, h, w)``, 0 if it passes, else 1 + the
    index of its first failed filter in :data:`FILTER_REASONS`."""
    flat = band_means.reshape(len(band_means), -1)
    if not len(flat):
        return np.zeros(0, dtype=np.int8)
    p_low, p_high = np.percentile(flat, [1, 99], axis=1)
    failed = np.stack([
        flat.max(axis=1) < dark,
        (flat < dark).mean(axis=1) > dark_fraction,
        (p_high - p_low) / 255.0 < contrast_threshold,
        (flat > bright).mean(axis=1) > bright_fraction,
    ], axis=1)  # fmt: skip
    return np.where(failed.any(axis=1), failed.argmax(axis=1) + 1, 0).astype(np.int8)

"""GeoKR's patch extraction: the per-scene percentile stretch to 8 bits and the dark / low-contrast / cloud filters.

The official pipeline (W. Li, K. Chen, H. Chen, Z. Shi, "Geographical Knowledge-Driven Representation Learning for
Remote Sensing Images", IEEE TGRS 60, 2022; code ``tool/crop_images.py``; METHODS.md §3.2 step 1) maps each Gaofen
scene to 8 bits with the 1st and 99th percentiles of its non-zero pixels, estimated on a 20x downsampled copy, and
drops a patch when, on its band-mean image,

- the maximum is below 20 (``"dark"``),
- more than 10 % of the pixels are below 20 (``"dark_pixels"``: nodata or shadow),
- scikit-image's ``is_low_contrast`` holds (``"low_contrast"``), or
- more than 50 % of the pixels are above 230 (``"cloud"``).

:class:`~rspretrain.datasets.RasterTiles` applies them with ``stretch="percentile"`` and ``patch_filters=True``.

Choices where METHODS.md leaves one (each a parameter here):

- the percentiles are taken **per band** (a shared pair would let one bright band, e.g. NIR, wash out the others);
  pixels that are nodata in the image are left out with the zeros and stay 0;
- stretched values are truncated to integers (``astype(uint8)`` after clipping to [0, 255]);
- ``is_low_contrast`` is its default test (``fraction_threshold`` 0.05, percentiles 1 and 99, ratio of the
  percentile range to the dtype range) on the band mean as an 8-bit image, i.e. a 1-99 % range below 12.75
  grey levels; it is written out here (three lines) instead of adding scikit-image as a dependency.
"""

from __future__ import annotations

import numpy as np

from rspretrain.errors import DataError

#: Why a patch was dropped, in the order the filters are tested; a patch counts under its first reason.
FILTER_REASONS = ("dark", "dark_pixels", "low_contrast", "cloud")


def percentile_stretch(
    array: np.ndarray,
    valid: np.ndarray,
    low: float = 1.0,
    high: float = 99.0,
    subsample: int = 20,
    name: str = "raster",
) -> np.ndarray:
    """uint8 ``(C, H, W)``: each band of ``array`` mapped linearly from its ``low``-``high`` percentile range to 0-255.

    Args:
        array: ``(C, H, W)`` pixel values, any dtype.
        valid: ``(H, W)`` bool, False where the image is nodata (those pixels become 0).
        low, high: percentiles of the band's non-zero valid pixels, estimated on every ``subsample``-th row and
            column.
        subsample: the downsampling step of the estimate (20 in the official code).
        name: for the error message.

    Raises:
        DataError: a band with no non-zero valid pixel in the subsample.
    """
    out = np.zeros(array.shape, dtype=np.uint8)
    sample_valid = valid[::subsample, ::subsample]
    for band in range(array.shape[0]):
        sample = array[band, ::subsample, ::subsample][sample_valid]
        sample = sample[sample != 0]
        if not sample.size:
            raise DataError(f"{name}: band {band + 1} has no non-zero pixel to stretch from")
        lo, hi = np.percentile(sample.astype(np.float64), [low, high])
        scale = 255.0 / max(hi - lo, np.finfo(np.float32).eps)
        stretched = (array[band].astype(np.float32) - np.float32(lo)) * np.float32(scale)
        np.clip(stretched, 0.0, 255.0, out=stretched)
        out[band] = stretched.astype(np.uint8)
        out[band][~valid] = 0
    return out


def patch_filter_reasons(
    band_mean: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    tile: int,
    dark: float = 20.0,
    dark_fraction: float = 0.10,
    bright: float = 230.0,
    bright_fraction: float = 0.50,
    contrast_threshold: float = 0.05,
    chunk: int = 1024,
) -> np.ndarray:
    """int8 ``(N,)``: for each ``tile`` x ``tile`` patch at ``(rows[i], cols[i])`` of the 8-bit ``band_mean`` image,
    0 if it passes, else 1 + the index of its first failed filter in :data:`FILTER_REASONS`."""
    reasons = np.zeros(len(rows), dtype=np.int8)
    offsets = np.arange(tile)
    for start in range(0, len(rows), chunk):
        r, c = rows[start : start + chunk], cols[start : start + chunk]
        patches = band_mean[(r[:, None] + offsets)[:, :, None], (c[:, None] + offsets)[:, None, :]]
        flat = patches.reshape(len(r), -1)
        p_low, p_high = np.percentile(flat, [1, 99], axis=1)
        failed = np.stack([
            flat.max(axis=1) < dark,
            (flat < dark).mean(axis=1) > dark_fraction,
            (p_high - p_low) / 255.0 < contrast_threshold,
            (flat > bright).mean(axis=1) > bright_fraction,
        ], axis=1)  # fmt: skip
        first = np.where(failed.any(axis=1), failed.argmax(axis=1) + 1, 0)
        reasons[start : start + chunk] = first
    return reasons

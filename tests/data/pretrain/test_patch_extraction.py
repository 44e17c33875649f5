"""GeoKR's patch extraction: per-band 1-99 % stretch to 8 bits and the dark / low-contrast / cloud filters."""

from __future__ import annotations

import numpy as np
import pytest

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import LandCoverTiles, RasterTiles, read_raster
from rspretrain.data.pretrain.patch_extraction import (
    FILTER_REASONS,
    apply_stretch,
    patch_filter_reasons,
    stretch_limits,
)

ZION = "zion_landsat8_nlcd2011"
BANDS = [f"{ZION}/landsat8_LC80380342015230_b{b}.tif" for b in (2, 3, 4, 5)]


def test_stretch_maps_each_bands_percentiles_to_0_and_255_and_keeps_zeros_and_nodata_at_0():
    ramp = np.arange(1, 101, dtype=np.uint16).reshape(10, 10)  # 1..100
    ramp[0, 0] = 0  # a zero pixel: not in the percentiles
    array = np.stack([ramp, ramp * 100])  # the second band 100x brighter: the same 8-bit image
    valid = np.ones((10, 10), dtype=bool)
    valid[9, 9] = False  # image nodata (100): left out of the percentiles
    limits = stretch_limits(array, valid)
    lo, hi = np.percentile(np.arange(2, 100, dtype=np.float64), [1, 99])  # non-zero valid pixels: 2..99
    np.testing.assert_allclose(limits, [[lo, hi], [100 * lo, 100 * hi]])
    out = apply_stretch(array, limits)
    assert out.dtype == np.float32 and (out[0] == out[1]).all() and (out == np.floor(out)).all()
    expected = np.floor(np.clip((ramp.astype(np.float64) - lo) * 255.0 / (hi - lo), 0, 255))
    assert np.abs(out[0] - expected).max() <= 1  # float32 arithmetic vs float64
    assert out[0, 0, 0] == 0 and out[0, 0, 1] == 0 and out[0, 9, 8] == 255 and 120 < out[0, 4, 9] < 135
    with pytest.raises(DataError, match="scene.tif: band 1 has no non-zero pixel"):
        stretch_limits(np.zeros((1, 4, 4)), np.ones((4, 4), dtype=bool), name="scene.tif")


def test_each_filter_drops_the_patch_it_describes():
    tile = 10
    gradient = np.linspace(30, 200, tile * tile).reshape(tile, tile)
    dark = np.full((tile, tile), 10.0)
    dark_pixels = gradient.copy()
    dark_pixels.flat[:15] = 5.0  # 15 % below 20
    flat = np.full((tile, tile), 100.0) + np.linspace(0, 10, tile * tile).reshape(tile, tile)  # range 10 < 12.75
    cloud = gradient.copy()
    cloud.flat[:60] = 240.0  # 60 % above 230
    nine_percent_dark = gradient.copy()
    nine_percent_dark.flat[:9] = 5.0  # within the 10 % allowance
    reasons = patch_filter_reasons(np.stack([dark, dark_pixels, flat, cloud, gradient, nine_percent_dark]))
    assert [FILTER_REASONS[k - 1] if k else "kept" for k in reasons] == [
        "dark", "dark_pixels", "low_contrast", "cloud", "kept", "kept"]


def test_zion_tiles_with_geokrs_patch_extraction(data_root):
    raster = read_raster([data_root / p for p in BANDS])
    raw = RasterTiles(raster, 64, 48)
    stretched = RasterTiles(raster, 64, 48, stretch="percentile")
    filtered = RasterTiles(raster, 64, 48, stretch="percentile", patch_filters=True)
    assert len(stretched) == len(raw) == 667 and stretched.value_scale == 255.0
    image = stretched[0]["image"]
    assert image.min() >= 0 and image.max() <= 255 and (image == image.round()).all()
    assert sum(filtered.filtered.values()) == len(raw) - len(filtered) > 0
    assert set(filtered.filtered) == set(FILTER_REASONS)
    kept = {tuple(w) for w in filtered.windows.tolist()}
    assert kept < {tuple(w) for w in raw.windows.tolist()}
    # every candidate tile, judged by hand on its stretched band mean: kept exactly when it passes all four tests
    kept_by_hand = set()
    for row, col in raw.windows.tolist():
        mean = stretched._read(np.array([row]), np.array([col]))[0].mean(0).ravel()
        p1, p99 = np.percentile(mean, [1, 99])
        if mean.max() >= 20 and (mean < 20).mean() <= 0.1 and (p99 - p1) >= 0.05 * 255 and (mean > 230).mean() <= 0.5:
            kept_by_hand.add((row, col))
    assert kept == kept_by_hand
    assert filtered.filtered["dark_pixels"] == 39 == len(raw) - len(filtered)  # Zion's shadowed canyons
    assert raster.array.dtype == np.uint16  # the raw scene is kept as it was read
    with pytest.raises(ConfigError, match="patch_filters work on 8-bit values"):
        RasterTiles(raster, 64, patch_filters=True)
    with pytest.raises(ConfigError, match="stretch must be 'none' or 'percentile'"):
        RasterTiles(raster, 64, stretch="minmax")


def test_land_cover_tiles_pass_the_extraction_options_through(data_root):
    labelled = LandCoverTiles.from_files([data_root / p for p in BANDS], land_cover=data_root / ZION / "nlcd2011.tif",
                                         scheme="nlcd8", tile=64, stride=48, stretch="percentile",
                                         patch_filters=True)
    assert labelled.value_scale == 255.0 and sum(labelled.dropped_patch_filters.values()) > 0
    assert len(labelled) <= 667 - sum(labelled.dropped_patch_filters.values())

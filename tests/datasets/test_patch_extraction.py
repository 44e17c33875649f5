"""GeoKR's patch extraction: per-band 1-99 % stretch to 8 bits and the dark / low-contrast / cloud filters."""

from __future__ import annotations

import numpy as np
import pytest

from rspretrain.datasets import LandCoverTiles, RasterTiles, read_raster
from rspretrain.datasets.patch_extraction import FILTER_REASONS, patch_filter_reasons, percentile_stretch
from rspretrain.errors import ConfigError, DataError

ZION = "zion_landsat8_nlcd2011"
BANDS = [f"{ZION}/landsat8_LC80380342015230_b{b}.tif" for b in (2, 3, 4, 5)]


def test_stretch_maps_each_bands_percentiles_to_0_and_255_and_keeps_zeros_and_nodata_at_0():
    ramp = np.arange(1, 101, dtype=np.uint16).reshape(10, 10)  # 1..100: p1 = 1.99, p99 = 99.01
    ramp[0, 0] = 0  # a zero pixel: not in the percentiles, stays 0
    array = np.stack([ramp, ramp * 100])  # the second band 100x brighter: the same 8-bit image
    valid = np.ones((10, 10), dtype=bool)
    valid[9, 9] = False  # image nodata: left out and 0
    out = percentile_stretch(array, valid, subsample=1)
    assert out.dtype == np.uint8 and (out[0] == out[1]).all()
    lo, hi = np.percentile(np.arange(2, 100, dtype=np.float64), [1, 99])  # non-zero valid pixels: 2..99
    expected = np.clip((ramp.astype(np.float64) - lo) * 255.0 / (hi - lo), 0, 255).astype(np.uint8)
    expected[9, 9] = 0
    assert np.abs(out[0].astype(int) - expected.astype(int)).max() <= 1  # float32 arithmetic vs float64
    assert out[0, 0, 0] == 0 and out[0, 9, 9] == 0 and out[0, 0, 1] == 0 and out[0, 9, 8] == 255
    with pytest.raises(DataError, match="scene.tif: band 1 has no non-zero pixel"):
        percentile_stretch(np.zeros((1, 4, 4)), np.ones((4, 4), dtype=bool), name="scene.tif")


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
    image = np.concatenate([dark, dark_pixels, flat, cloud, gradient, nine_percent_dark], axis=1)
    cols = np.arange(6) * tile
    reasons = patch_filter_reasons(image, np.zeros(6, dtype=np.int64), cols, tile, chunk=4)  # crosses a chunk
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
    # a kept tile is not mostly dark on its band mean, as the filter asked
    band_mean = filtered[0]["image"].mean(0)
    assert (band_mean < 20).float().mean() <= 0.10 and raster.array.dtype == np.uint16  # the raw scene is kept
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

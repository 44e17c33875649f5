"""read_raster and RasterTiles on real GeoTIFFs (Zion Landsat 8, rasterio's RGB.byte, Sen1Floods11 S2) and tmp files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from torch.utils.data import DataLoader

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import RasterTiles, build_dataset, collate_batched, read_raster


@pytest.fixture(scope="module")
def zion_files(data_root):
    return [data_root / "zion_landsat8_nlcd2011" / f"landsat8_LC80380342015230_b{b}.tif" for b in (2, 3, 4, 5)]


@pytest.fixture(scope="module")
def zion(zion_files):
    return read_raster(zion_files)


def _write(path, array, crs="EPSG:32612", transform=None, nodata=None, descriptions=None):
    array = np.asarray(array)
    profile = dict(driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
                   dtype=array.dtype, transform=transform or Affine(30.0, 0.0, 300000.0, 0.0, -30.0, 4100000.0))
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as target:
        target.write(array)
        for i, description in enumerate(descriptions or [], start=1):
            target.set_band_description(i, description)
    return path


def test_zion_stack_keeps_values_and_georeference(zion, zion_files):
    with rasterio.open(zion_files[0]) as first:
        shape, crs, transform, nodata = (first.height, first.width), first.crs, first.transform, first.nodata
    assert zion.array.shape == (4, *shape) == (4, 1428, 1128)  # rows x cols: the scene is 1128 px wide
    assert zion.dtype == np.uint16 and zion.crs == crs == CRS.from_epsg(32612)
    assert zion.transform == transform and zion.nodata == nodata == 65535
    assert zion.band_names == ("b2", "b3", "b4", "b5")
    assert zion.paths == tuple(zion_files)
    for k, path in enumerate(zion_files):
        with rasterio.open(path) as source:
            assert np.array_equal(zion.array[k], source.read(1))


def test_rgb_byte(data_root):
    raster = read_raster(data_root / "geotiff_samples" / "rasterio_RGB.byte.tif")
    assert raster.array.shape == (3, 718, 791) and raster.dtype == np.uint8
    assert raster.crs == CRS.from_epsg(32618) and raster.nodata == 0
    assert raster.band_names == ("band_1", "band_2", "band_3")  # no descriptions, multi-band file
    assert read_raster(raster.path, band_names=["red", "green", "blue"]).band_names == ("red", "green", "blue")
    assert 0.5 < raster.valid_mask().mean() < 0.8  # the scene's rotated footprint leaves nodata corners


def test_sentinel2_13_bands(data_root):
    path = data_root / "sen1floods11_sample" / "Spain_7370579_S2Hand.tif"
    raster = read_raster(path, expected_bands=13)
    assert raster.array.shape == (13, 512, 512) and raster.dtype == np.int16
    assert raster.band_names == ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
    assert raster.crs == CRS.from_epsg(4326)
    lower = [n.lower() for n in raster.band_names]
    assert read_raster(path, band_names=lower).band_names == raster.band_names  # descriptions agree, file wins
    swapped = list(raster.band_names)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    with pytest.raises(DataError, match="band 2 is described as 'B2' in the file but band_names gives 'B3'"):
        read_raster(path, band_names=swapped)


def test_wrong_band_count(data_root, zion_files):
    path = data_root / "sen1floods11_sample" / "Spain_7370579_S2Hand.tif"
    with pytest.raises(DataError, match="Spain_7370579_S2Hand.tif: has 13 bands, expected 4$"):
        read_raster(path, expected_bands=4)
    with pytest.raises(DataError, match="has 4 bands, expected 3"):
        read_raster(zion_files, expected_bands=3)
    with pytest.raises(DataError, match="has 13 bands but band_names lists 3"):
        read_raster(path, band_names=["a", "b", "c"])


def test_grid_mismatch(zion_files, data_root, tmp_path):
    nlcd = data_root / "zion_landsat8_nlcd2011" / "nlcd2011.tif"
    with pytest.raises(DataError, match="nlcd2011.tif: grid differs from landsat8_LC80380342015230_b2.tif: shape"):
        read_raster([zion_files[0], nlcd])
    # same shape and CRS, grid shifted by one pixel
    with rasterio.open(zion_files[1]) as source:
        band, transform, crs = source.read(), source.transform, source.crs
    shifted = _write(tmp_path / "shifted.tif", band, crs=crs, transform=transform @ transform.translation(1, 0),
                     nodata=65535)
    with pytest.raises(DataError, match="shifted.tif: grid differs .*: transform"):
        read_raster([zion_files[0], shifted])
    other_crs = _write(tmp_path / "utm13.tif", band, crs="EPSG:32613", transform=transform, nodata=65535)
    with pytest.raises(DataError, match="utm13.tif: grid differs .*: CRS"):
        read_raster([zion_files[0], other_crs])
    other_nodata = _write(tmp_path / "nd0.tif", band, crs=crs, transform=transform, nodata=0)
    with pytest.raises(DataError, match="nd0.tif: nodata 0.0 differs"):
        read_raster([zion_files[0], other_nodata])


def test_no_crs(tmp_path):
    path = _write(tmp_path / "plain.tif", np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8), crs=None)
    with pytest.raises(DataError, match="plain.tif: GeoTIFF has no CRS"):
        read_raster(path)
    raster = read_raster(path, require_crs=False)
    assert raster.crs is None and raster.array.shape == (2, 8, 8) and raster.dtype == np.float32
    assert RasterTiles(raster, tile=4)[0]["crs"] == ""


def test_the_no_crs_message_names_a_config_route_that_works(tmp_path):
    from rspretrain.data.build import build_dataset
    from rspretrain.pretrain.config import load_config

    path = _write(tmp_path / "plain.tif", np.arange(3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8), crs=None)
    with pytest.raises(DataError, match=r"--data.dataset_options '\{require_crs: false\}'"):
        build_dataset(f"geotiff:{path}", image_size=4)
    # what the message tells a user to type, through the config parser, reaches the reader
    cfg = load_config("moco_resnet18_eurosat", ["--data.dataset", f"geotiff:{path}", "--data.dataset_options",
                                                "{require_crs: false}"])
    assert cfg.data.dataset_options == {"require_crs": False}
    tiles = build_dataset(cfg.data.dataset, image_size=4, **cfg.data.dataset_options)
    assert len(tiles) == 4 and tiles[0]["crs"] == ""


def test_unreadable_files(tmp_path, data_root):
    with pytest.raises(DataError, match="absent.tif: no such file"):
        read_raster(tmp_path / "absent.tif")
    (tmp_path / "text.tif").write_text("not a raster")
    with pytest.raises(DataError, match="text.tif: not a readable raster"):
        read_raster(tmp_path / "text.tif")
    data = (data_root / "geotiff_samples" / "rasterio_RGB.byte.tif").read_bytes()
    (tmp_path / "half.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="half.tif: not a readable raster"):
        read_raster(tmp_path / "half.tif")
    # header intact (GDAL writes it first), pixel data cut off
    whole = _write(tmp_path / "whole.tif", np.random.RandomState(0).randint(0, 999, (3, 256, 256)).astype(np.uint16))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.tif: not a readable raster"):
        read_raster(cut)
    with pytest.raises(DataError, match="listed twice"):
        read_raster([whole, whole])


def test_band_names_from_file_stems(tmp_path):
    one = _write(tmp_path / "scene_nir.tif", np.ones((1, 4, 4), np.uint16))
    two = _write(tmp_path / "other_nir.tif", np.ones((1, 4, 4), np.uint16))
    red = _write(tmp_path / "scene_red.tif", np.ones((1, 4, 4), np.uint8))
    raster = read_raster([one, red])
    assert raster.band_names == ("nir", "red") and raster.dtype == np.uint16  # common dtype of uint16 and uint8
    assert read_raster([one, two]).band_names == ("scene_nir_nir", "other_nir_nir")  # repeated names get the stem


def test_zion_tiles(zion):
    tiles = RasterTiles(zion, tile=64)
    assert len(tiles) == (1428 // 64) * (1128 // 64) == 374 and tiles.dropped == 0  # Zion has no nodata pixel
    sample = tiles[20]
    row, col, height, width = sample["window"]
    assert (height, width) == (64, 64) and sample["image"].dtype == torch.float32
    assert sample["image"].shape == (4, 64, 64)
    expected = torch.from_numpy(zion.array[:, row : row + 64, col : col + 64].astype(np.float32))
    assert torch.equal(sample["image"], expected)
    with warnings.catch_warnings():  # rasterio's own use of the affine `*` operator warns; not ours to fix
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        expected_bounds = window_bounds(Window(col, row, 64, 64), zion.transform)
    assert sample["bounds"] == pytest.approx(expected_bounds)
    assert sample["crs"] == "EPSG:32612" and sample["valid_fraction"] == 1.0
    batch = tiles.__getitems__([3, 20, 373])
    assert torch.equal(batch["image"], torch.stack([tiles[i]["image"] for i in (3, 20, 373)]))
    assert batch["bounds"].shape == (3, 4) and batch["bounds"].dtype == torch.float64
    assert batch["bounds"][1].tolist() == list(sample["bounds"])
    assert batch["window"][1].tolist() == list(sample["window"]) and batch["crs"] == ["EPSG:32612"] * 3
    overlapping = RasterTiles(zion, tile=64, stride=32)
    assert len(overlapping) == ((1428 - 64) // 32 + 1) * ((1128 - 64) // 32 + 1)


def test_nodata_tiles_are_dropped(data_root):
    raster = read_raster(data_root / "geotiff_samples" / "rasterio_RGB.byte.tif")
    valid = raster.valid_mask()
    total = (718 // 64) * (791 // 64)
    for fraction in (0.0, 0.25, 1.0):
        tiles = RasterTiles(raster, tile=64, max_nodata_fraction=fraction)
        expected = sum(
            1.0 - valid[r : r + 64, c : c + 64].mean() <= fraction + 1e-12
            for r in range(0, 718 - 63, 64) for c in range(0, 791 - 63, 64)
        )
        assert len(tiles) == expected and tiles.dropped == total - expected
    assert RasterTiles(raster, tile=64, max_nodata_fraction=0.0).dropped > 0
    assert RasterTiles(raster, tile=64, max_nodata_fraction=1.0).dropped == 0


def test_nodata_pixels_become_zero(tmp_path):
    array = np.full((2, 8, 8), 1000, dtype=np.uint16)
    array[:, :2, :2] = 65535  # 4 nodata pixels in the top-left tile
    array[1, 6, 6] = 65535  # a pixel missing in one band only counts as nodata too
    raster = read_raster(_write(tmp_path / "nd.tif", array, nodata=65535))
    assert RasterTiles(raster, tile=4).dropped == 2 and len(RasterTiles(raster, tile=4)) == 2
    tiles = RasterTiles(raster, tile=4, max_nodata_fraction=0.25)
    assert len(tiles) == 4 and tiles.dropped == 0
    first = tiles[0]
    assert first["valid_fraction"] == 0.75 and first["window"] == (0, 0, 4, 4)
    assert torch.all(first["image"][:, :2, :2] == 0) and torch.all(first["image"][:, 2:, 2:] == 1000)
    last = tiles[3]
    assert last["valid_fraction"] == 15 / 16 and torch.all(last["image"][:, 2, 2] == 0)
    # tiles are converted copies: the scene is held once, raw, and writing a tile leaves it untouched
    assert tiles.raster.array is raster.array and raster.array.dtype == np.uint16
    first["image"].fill_(5)
    assert (raster.array[:, :2, :2] == 65535).all() and torch.all(tiles[0]["image"][:, 2:, 2:] == 1000)
    with pytest.raises(DataError, match="all 4 tiles of 4x4 px have more than 10% nodata"):
        RasterTiles(read_raster(_write(tmp_path / "holes.tif", np.where(np.indices((1, 8, 8))[2] % 2, 65535, 7)
                                       .astype(np.uint16), nodata=65535)), tile=4, max_nodata_fraction=0.1)


def test_tile_arguments(zion):
    with pytest.raises(DataError, match="smaller than one 2000x2000 tile"):
        RasterTiles(zion, tile=2000)
    with pytest.raises(ConfigError):
        RasterTiles(zion, tile=0)
    with pytest.raises(ConfigError):
        RasterTiles(zion, tile=64, max_nodata_fraction=1.5)


def test_dataloader_and_spec(zion_files):
    spec = "geotiff:" + ",".join(str(p) for p in zion_files)
    tiles = build_dataset(spec, tile=128)
    assert isinstance(tiles, RasterTiles) and len(tiles) == (1428 // 128) * (1128 // 128)
    assert len(build_dataset(spec, image_size=128)) == len(tiles)
    with pytest.raises(ConfigError, match="contradicts image_size"):
        build_dataset(spec, image_size=64, tile=128)
    batches = list(DataLoader(tiles, batch_size=16, collate_fn=collate_batched))
    stacked = torch.stack([tiles[i]["image"] for i in range(len(tiles))])
    assert torch.equal(torch.cat([b["image"] for b in batches]), stacked)
    assert batches[0]["image"].shape == (16, 4, 128, 128)


def test_value_scale_follows_the_dtype_unless_given(zion, data_root, tmp_path):
    assert RasterTiles(zion, tile=256).value_scale == 65535.0  # uint16 Landsat DN
    rgb = read_raster(data_root / "geotiff_samples" / "rasterio_RGB.byte.tif")
    assert RasterTiles(rgb, tile=64, max_nodata_fraction=1.0).value_scale == 255.0
    s2 = read_raster(data_root / "sen1floods11_sample" / "Spain_7370579_S2Hand.tif")
    assert RasterTiles(s2, tile=256, value_scale=10000).value_scale == 10000.0  # reflectance x 10000
    floats = read_raster(_write(tmp_path / "f.tif", np.zeros((1, 8, 8), np.float32)))
    assert RasterTiles(floats, tile=4).value_scale == 1.0
    with pytest.raises(ConfigError, match="value_scale must be > 0"):
        RasterTiles(zion, tile=256, value_scale=0)


def test_within_keeps_the_tiles_inside_a_region(zion):
    west, south, east, north = rasterio.transform.array_bounds(zion.height, zion.width, zion.transform)
    middle = west + 30.0 * 564
    left = RasterTiles(zion, tile=64, stride=48, within=(west, south, middle, north))
    right = RasterTiles(zion, tile=64, stride=48, within=(middle + 30.0 * 64, south, east, north))
    assert (left.bounds[:, 2] <= middle).all() and (right.bounds[:, 0] >= middle + 30.0 * 64).all()
    assert len(left) == 11 * 29 and len(right) == 9 * 29 and left.dropped == right.dropped == 0
    everything = RasterTiles(zion, tile=64, stride=48)
    assert len(everything) == 23 * 29 > len(left) + len(right)  # the gap's tiles belong to neither region
    assert torch.equal(left[0]["image"], everything[0]["image"])
    with pytest.raises(DataError, match="no 64x64 px tile lies within"):
        RasterTiles(zion, tile=64, within=(0, 0, 10, 10))
    with pytest.raises(ConfigError, match="within must be"):
        RasterTiles(zion, tile=64, within=(1, 2, 0, 3))


@pytest.mark.parametrize("options", [{}, {"stretch": "percentile", "patch_filters": True}])
def test_windowed_reading_gives_the_in_memory_tiles(zion, zion_files, options):
    windowed = read_raster(zion_files, windowed=True)
    assert windowed.array is None and windowed.shape == zion.shape and windowed.dtype == zion.dtype
    assert windowed.band_names == zion.band_names and windowed.crs == zion.crs and windowed.transform == zion.transform
    assert (windowed.valid_mask(strip_rows=100) == zion.valid_mask()).all()
    assert (windowed.subsample(20) == zion.array[:, ::20, ::20]).all()
    eager, lazy = RasterTiles(zion, 64, 48, **options), RasterTiles(windowed, 64, 48, **options)
    assert (lazy.windows == eager.windows).all() and lazy.filtered == eager.filtered
    everything = range(len(eager))
    assert torch.equal(lazy.__getitems__(everything)["image"], eager.__getitems__(everything)["image"])
    # DataLoader workers (forked) open their own file handles
    loader = DataLoader(lazy, batch_size=64, collate_fn=collate_batched, num_workers=2)
    assert torch.equal(torch.cat([b["image"] for b in loader]), eager.__getitems__(everything)["image"])


def test_windowed_nodata_and_a_damaged_block_named(tmp_path):
    array = np.full((2, 64, 64), 1000, dtype=np.uint16)
    array[:, :2, :2] = 65535
    path = _write(tmp_path / "nd.tif", array, nodata=65535)
    eager = RasterTiles(read_raster(path), tile=8, max_nodata_fraction=0.1)
    lazy = RasterTiles(read_raster(path, windowed=True), tile=8, max_nodata_fraction=0.1)
    assert torch.equal(lazy[0]["image"], eager[0]["image"]) and torch.all(lazy[0]["image"][:, :2, :2] == 0)
    # a tiled, compressed file with one block overwritten: the header reads, that block does not
    damaged = tmp_path / "damaged.tif"
    profile = dict(driver="GTiff", width=64, height=64, count=1, dtype="uint16", crs="EPSG:32612", tiled=True,
                   blockxsize=32, blockysize=32, compress="deflate",
                   transform=Affine(30.0, 0.0, 300000.0, 0.0, -30.0, 4100000.0))
    with rasterio.open(damaged, "w", **profile) as target:
        target.write(np.random.default_rng(0).integers(0, 9999, (1, 64, 64), dtype=np.uint16))
    with rasterio.open(damaged) as source:
        offset = int(source.get_tag_item("BLOCK_OFFSET_0_1", "TIFF", bidx=1))
    with open(damaged, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 64)
    raster = read_raster(damaged, windowed=True)  # the header is intact: reading it succeeds
    with pytest.raises(DataError, match=r"damaged\.tif: reading window .* failed"):
        RasterTiles(raster, tile=32)  # the nodata pass reads every block
    with pytest.raises(DataError, match=r"damaged\.tif: reading window .* failed"):
        raster.window(slice(32, 64), slice(0, 32))  # GDAL's BLOCK_OFFSET_<x>_<y>: block column 0, row 1
    assert raster.window(slice(0, 32), slice(32, 64)).shape == (1, 32, 32)  # an undamaged block still reads

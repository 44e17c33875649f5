"""Land-cover proportions per tile (GeoKR's labels): schemes, CRS-aware alignment, nodata, extent, Parquet, datasets.

Real data: the Zion Landsat 8 scene (4 single-band files, EPSG:32612, 30 m) and NLCD 2011 (its own ~31.5 m grid on a
NAD83-like GRS80 datum); synthetic rasters in tmp_path where a number must be computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.warp import transform as warp_points
from torch.utils.data import DataLoader

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import (
    DominantClassTiles,
    LandCoverTiles,
    RasterTiles,
    available_schemes,
    build_dataset,
    collate_batched,
    land_cover_proportions,
    load_scheme,
    read_land_cover_labels,
    read_raster,
)
from rspretrain.data.pretrain.land_cover import NOT_COUNTED
from rspretrain.pretrain.datamodule import PretrainDataModule

ZION = "zion_landsat8_nlcd2011"
BANDS = [f"{ZION}/landsat8_LC80380342015230_b{b}.tif" for b in (2, 3, 4, 5)]


def _write(path, array, crs="EPSG:32612", transform=None, nodata=None):
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    profile = {"driver": "GTiff", "width": array.shape[2], "height": array.shape[1], "count": array.shape[0],
               "dtype": array.dtype, "transform": transform or Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4100000.0)}
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as target:
        target.write(array)
    return path


@pytest.fixture(scope="module")
def zion_paths(data_root):
    return [data_root / p for p in BANDS], data_root / ZION / "nlcd2011.tif"


@pytest.fixture(scope="module")
def zion_tiles(zion_paths):
    return RasterTiles(read_raster(zion_paths[0]), tile=64, stride=48)


@pytest.fixture(scope="module")
def zion_labels(zion_tiles, zion_paths):
    return land_cover_proportions(zion_tiles, zion_paths[1], "nlcd8")


# -- schemes -------------------------------------------------------------------------------------------
def test_shipped_schemes():
    assert set(available_schemes()) >= {"nlcd", "nlcd8", "globeland30", "globeland30_8", "worldcover"}
    sizes = {name: load_scheme(name).num_classes for name in available_schemes()}
    assert sizes["nlcd"] == 20 and sizes["nlcd8"] == 8 and sizes["globeland30"] == 10
    assert sizes["globeland30_8"] == 8 and sizes["worldcover"] == 11
    nlcd8 = load_scheme("nlcd8")
    assert nlcd8.classes == ("Water", "Developed", "Barren", "Forest", "Shrubland", "Herbaceous", "Cultivated",
                             "Wetlands")
    # original NLCD codes and the simplified raster's 1-8 map to the same classes
    assert nlcd8.codes[42] == nlcd8.codes[4] == 3 and nlcd8.codes[95] == nlcd8.codes[8] == 7
    g10, g8 = load_scheme("globeland30"), load_scheme("globeland30_8")
    assert g10.codes[75] == g10.classes.index("Tundra") and g10.codes[255] == NOT_COUNTED
    assert g8.codes[40] == NOT_COUNTED and g8.codes[70] == NOT_COUNTED and "Shrubland" not in g8.classes
    assert load_scheme("worldcover").codes[0] == NOT_COUNTED
    codes = np.array([[42, 4, 255], [7, 200, 11]], dtype=np.uint8)
    mapped, unknown = nlcd8.class_map(codes, nodata=255)
    assert mapped.tolist() == [[3, 3, NOT_COUNTED], [6, -2, 0]] and unknown == {200: 1}


def test_scheme_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown land-cover scheme 'nlcd9'; shipped: .*nlcd8"):
        load_scheme("nlcd9")
    bad = tmp_path / "bad.csv"
    bad.write_text("# comment\ncode,class\n1,Water\nx,Forest\n")
    with pytest.raises(DataError, match=r"bad.csv: line 4: code 'x' is not an integer"):
        load_scheme(bad)
    bad.write_text("code,class\n1,Water\n1,Forest\n")
    with pytest.raises(DataError, match=r"bad.csv: line 3: code 1 is listed twice"):
        load_scheme(bad)
    good = tmp_path / "mine.csv"
    good.write_text("code,class,description\n3,B,\n1,A,first\n2,A,\n9,,ignored\n")
    scheme = load_scheme(good)
    assert scheme.name == "mine" and scheme.classes == ("B", "A") and scheme.codes == {3: 0, 1: 1, 2: 1, 9: -1}


# -- proportions -----------------------------------------------------------------------------------------
def test_hand_computed_tiles(tmp_path):
    # Image: 8x8 px of 10 m. Product: 4x4 px of 20 m on the same origin, so each product pixel is 2x2 image pixels
    # and each 4 px tile covers 2x2 product pixels.
    image = _write(tmp_path / "img.tif", np.ones((3, 8, 8), np.uint8))
    codes = np.array([[41, 41, 52, 52],
                      [41, 11, 52, 255],
                      [21, 21, 31, 31],
                      [90, 82, 31, 31]], dtype=np.uint8)  # fmt: skip
    product = _write(tmp_path / "lc.tif", codes, transform=Affine(20.0, 0, 500000.0, 0, -20.0, 4100000.0), nodata=255)
    labels = land_cover_proportions(RasterTiles(read_raster(image), tile=4), product, "nlcd8")
    c = {name: i for i, name in enumerate(labels.classes)}
    expected = np.zeros((4, 8))
    expected[0, [c["Forest"], c["Water"]]] = 0.75, 0.25
    expected[1, c["Shrubland"]] = 1.0  # the nodata quarter is not counted
    expected[2, [c["Developed"], c["Wetlands"], c["Cultivated"]]] = 0.5, 0.25, 0.25
    expected[3, c["Barren"]] = 1.0
    assert labels.windows.tolist() == [[0, 0], [0, 4], [4, 0], [4, 4]]
    np.testing.assert_allclose(labels.proportions, expected, atol=1e-12)
    np.testing.assert_allclose(labels.land_cover_fraction, [1.0, 0.75, 1.0, 1.0])
    assert labels.meta["supersample"] == 1 and labels.dropped_outside == labels.dropped_no_land_cover == 0


def test_zion_proportions_sum_to_one_and_match_point_sampling(zion_labels, zion_tiles, zion_paths):
    assert len(zion_labels) == len(zion_tiles) == 667 and zion_labels.dropped_outside == 0
    np.testing.assert_allclose(zion_labels.proportions.sum(axis=1), 1.0, atol=1e-12)
    assert (zion_labels.proportions >= 0).all()
    # Independent check of one mixed tile: transform each pixel centre into the NLCD CRS with PROJ, read the NLCD
    # pixel that contains it, map the code with the scheme and count.
    entropy = -(zion_labels.proportions * np.log(zion_labels.proportions + 1e-12)).sum(axis=1)
    i = int(entropy.argmax())
    row, col = zion_labels.windows[i]
    transform = zion_tiles.raster.transform
    rows, cols = np.mgrid[row : row + 64, col : col + 64]
    xs, ys = rasterio.transform.xy(transform, rows.ravel(), cols.ravel(), offset="center")
    with rasterio.open(zion_paths[1]) as nlcd:
        px, py = warp_points(zion_tiles.raster.crs, nlcd.crs, xs, ys)
        r, c = rasterio.transform.rowcol(nlcd.transform, px, py)
        codes = nlcd.read(1)[np.asarray(r), np.asarray(c)]
    scheme = load_scheme("nlcd8")
    counts = np.bincount([scheme.codes[int(v)] for v in codes], minlength=8)
    assert (counts > 0).sum() >= 3  # a genuinely mixed tile
    np.testing.assert_allclose(zion_labels.proportions[i], counts / counts.sum(), atol=2 / 4096)


def test_simplified_product_gives_the_same_labels(zion_tiles, zion_labels, data_root):
    # nlcd2011_simplified.tif: the same map generalised to codes 1-8, in EPSG:26912 (NAD83 / UTM 12N)
    simplified = land_cover_proportions(zion_tiles, data_root / ZION / "nlcd2011_simplified.tif", "nlcd8")
    np.testing.assert_allclose(simplified.proportions, zion_labels.proportions, atol=1e-12)


@pytest.fixture(scope="module")
def geographic_nlcd(tmp_path_factory, zion_paths):
    """NLCD re-projected to EPSG:4326 at 0.0001 deg (~9 x 11 m): another CRS (in degrees) and resolution."""
    with rasterio.open(zion_paths[1]) as source:
        codes, crs, transform = source.read(1), source.crs, source.transform
        dst_transform, width, height = calculate_default_transform(
            crs, "EPSG:4326", source.width, source.height, *source.bounds, resolution=0.0001
        )
    geo = np.full((height, width), 255, np.uint8)
    reproject(codes, geo, src_transform=transform, src_crs=crs, dst_transform=dst_transform, dst_crs="EPSG:4326",
              src_nodata=255, dst_nodata=255, resampling=Resampling.nearest)
    return _write(tmp_path_factory.mktemp("geo") / "nlcd_4326.tif", geo, crs="EPSG:4326", transform=dst_transform,
                  nodata=255)


def test_warping_between_crss_matches_a_prewarped_raster(zion_paths, geographic_nlcd, tmp_path):
    raster = read_raster(zion_paths[0])
    # a 6 x 6 block of tiles in the middle of the scene keeps the fine warp quick
    x0, y1 = raster.transform @ (320, 384)
    x1, y0 = raster.transform @ (320 + 6 * 64, 384 + 6 * 64)
    tiles = RasterTiles(raster, tile=64, within=(x0, y0, x1, y1))
    assert len(tiles) == 36
    # pre-warped: the NLCD resampled onto the Landsat grid beforehand (same CRS and pixels: nothing left to warp)
    with rasterio.open(zion_paths[1]) as source:
        prewarped = np.zeros((raster.height, raster.width), np.uint8)
        reproject(source.read(1), prewarped, src_transform=source.transform, src_crs=source.crs,
                  dst_transform=raster.transform, dst_crs=raster.crs, resampling=Resampling.nearest)
    prewarped_path = _write(tmp_path / "prewarped.tif", prewarped, crs=raster.crs, transform=raster.transform,
                            nodata=255)
    reference = land_cover_proportions(tiles, prewarped_path, "nlcd8")
    direct = land_cover_proportions(tiles, zion_paths[1], "nlcd8")
    np.testing.assert_allclose(direct.proportions, reference.proportions, atol=1e-12)
    # From degrees at ~10 m: the product is finer than the image, so each image pixel is split 3 x 3.
    geographic = land_cover_proportions(tiles, geographic_nlcd, "nlcd8")
    assert geographic.meta["supersample"] == 3 and len(geographic) == len(reference)
    difference = np.abs(geographic.proportions - reference.proportions)
    assert difference.mean() < 0.003 and difference.max() < 0.05, (difference.mean(), difference.max())


def test_nodata_is_excluded(tmp_path):
    image = _write(tmp_path / "img.tif", np.ones((1, 8, 8), np.uint16))
    codes = np.full((8, 8), 42, np.uint8)
    codes[:4, :2] = 0  # nodata: half of tile (0, 0)
    codes[:4, 2:3] = 11  # a quarter of tile (0, 0) is water
    codes[4:, 4:] = 0  # tile (4, 4) is nodata only
    codes[4:, :4] = 250  # tile (4, 0): a code NLCD does not have, not counted either
    product = _write(tmp_path / "lc.tif", codes, nodata=0)
    tiles = RasterTiles(read_raster(image), tile=4)
    labels = land_cover_proportions(tiles, product, "nlcd8")
    assert labels.windows.tolist() == [[0, 0], [0, 4]]
    assert labels.dropped_no_land_cover == 2 and labels.dropped_outside == 0
    np.testing.assert_allclose(labels.proportions[0], [0.5, 0, 0, 0.5, 0, 0, 0, 0])  # 4 water, 4 forest of 8 counted
    assert labels.land_cover_fraction[0] == 0.5 and labels.meta["unknown_codes"] == {"250": 16}
    strict = land_cover_proportions(tiles, product, "nlcd8", min_land_cover_fraction=0.6)
    assert strict.windows.tolist() == [[0, 4]] and strict.dropped_no_land_cover == 3


def test_image_nodata_pixels_count_no_land_cover(tmp_path):
    pixels = np.ones((1, 4, 4), np.uint16)
    pixels[0, :, :1] = 0  # the image's nodata: the left quarter of the tile
    image = _write(tmp_path / "img.tif", pixels, nodata=0)
    codes = np.full((4, 4), 42, np.uint8)  # forest ...
    codes[:, :1] = 11  # ... except water exactly under the image's nodata column
    product = _write(tmp_path / "lc.tif", codes)
    labels = land_cover_proportions(RasterTiles(read_raster(image), tile=4, max_nodata_fraction=0.5), product, "nlcd8")
    np.testing.assert_allclose(labels.proportions[0], [0, 0, 0, 1, 0, 0, 0, 0])  # the water is not seen: not counted
    assert labels.land_cover_fraction[0] == 0.75


def test_tiles_outside_the_extent_are_dropped_and_counted(tmp_path):
    image = _write(tmp_path / "img.tif", np.ones((1, 8, 16), np.uint8))
    # the product covers the left 6 image columns only (60 m), at a coarser 30 m grid
    product = _write(tmp_path / "lc.tif", np.full((3, 2), 42, np.uint8),
                     transform=Affine(30.0, 0, 500000.0, 0, -30.0, 4100000.0 - 5.0))
    labels = land_cover_proportions(RasterTiles(read_raster(image), tile=4), product, "nlcd8")
    # tile columns 0 (inside), 4 (straddles: 2 of 4 columns inside), 8 and 12 (outside), in 2 tile rows; the
    # product's 90 m height covers image rows 0-8.5 (centres up to 75 m below the top)
    assert labels.windows[:, 1].tolist() == [0, 4, 0, 4]
    assert labels.dropped_outside == 4 and labels.dropped_no_land_cover == 0
    np.testing.assert_allclose(labels.land_cover_fraction, [1.0, 0.5, 1.0, 0.5])
    np.testing.assert_allclose(labels.proportions[:, 3], 1.0)  # all forest


def test_real_partial_product_extent(zion_tiles, zion_paths, tmp_path):
    # Zion NLCD cut to its western half: eastern tiles fall outside the product and are dropped and counted.
    with rasterio.open(zion_paths[1]) as source:
        window = rasterio.windows.Window(0, 0, 536, source.height)
        west = _write(tmp_path / "west.tif", source.read(1, window=window), crs=source.crs,
                      transform=source.window_transform(window), nodata=255)
        edge = source.window_transform(window) @ (536, 0)
    labels = land_cover_proportions(zion_tiles, west, "nlcd8")
    tile_min_x = zion_tiles.bounds[:, 0]
    fully_outside = tile_min_x + 15.0 > edge[0]  # every pixel centre east of the product's edge
    assert labels.dropped_outside == int(fully_outside.sum()) > 100
    assert len(labels) == len(zion_tiles) - labels.dropped_outside
    straddling = (labels.bounds[:, 2] > edge[0])
    assert straddling.any() and (labels.land_cover_fraction[straddling] < 1).all()
    np.testing.assert_allclose(labels.proportions.sum(axis=1), 1.0, atol=1e-12)


def test_clear_errors_name_the_file(tmp_path, zion_tiles, zion_paths):
    image = _write(tmp_path / "img.tif", np.ones((1, 8, 8), np.uint8))
    tiles = RasterTiles(read_raster(image), tile=4)
    no_crs = _write(tmp_path / "no_crs_lc.tif", np.full((8, 8), 42, np.uint8), crs=None)
    with pytest.raises(DataError, match="no_crs_lc.tif: land-cover raster has no CRS"):
        land_cover_proportions(tiles, no_crs, "nlcd8")
    far = _write(tmp_path / "far_lc.tif", np.full((8, 8), 42, np.uint8),
                 transform=Affine(10.0, 0, 900000.0, 0, -10.0, 3000000.0))
    with pytest.raises(DataError, match="far_lc.tif: land-cover product does not overlap .*img.tif"):
        land_cover_proportions(tiles, far, "nlcd8")
    # a real pair with no overlap: the Zion NLCD against an image placed 500 km away
    away = _write(tmp_path / "away.tif", np.ones((1, 64, 64), np.uint16),
                  transform=Affine(30.0, 0, 301905.0 + 500_000, 0, -30.0, 4154085.0))
    with pytest.raises(DataError, match=r"nlcd2011.tif: land-cover product does not overlap .*away.tif"):
        land_cover_proportions(RasterTiles(read_raster(away), tile=64), zion_paths[1], "nlcd8")
    image_no_crs = _write(tmp_path / "plain_img.tif", np.ones((1, 8, 8), np.uint8), crs=None)
    with pytest.raises(DataError, match="plain_img.tif: image has no CRS"):
        land_cover_proportions(RasterTiles(read_raster(image_no_crs, require_crs=False), tile=4), zion_paths[1],
                               "nlcd8")
    with pytest.raises(DataError, match="plain_img.tif: GeoTIFF has no CRS"):
        LandCoverTiles.from_files(image_no_crs, land_cover=zion_paths[1], scheme="nlcd8", tile=4)
    two_bands = _write(tmp_path / "two_lc.tif", np.full((2, 8, 8), 42, np.uint8))
    with pytest.raises(DataError, match="two_lc.tif: a land-cover product must have one band, it has 2"):
        land_cover_proportions(tiles, two_bands, "nlcd8")
    empty = _write(tmp_path / "empty_lc.tif", np.zeros((8, 8), np.uint8), nodata=0)
    with pytest.raises(DataError, match="empty_lc.tif: none of the 4 tiles .* has counted land cover"):
        land_cover_proportions(tiles, empty, "nlcd8")
    with pytest.raises(DataError, match="absent.tif: no such land-cover file"):
        land_cover_proportions(tiles, tmp_path / "absent.tif", "nlcd8")


# -- Parquet and datasets -------------------------------------------------------------------------------------
def test_parquet_round_trip(zion_labels, tmp_path):
    path = zion_labels.to_parquet(tmp_path / "labels.parquet")
    back = read_land_cover_labels(path)
    assert back.classes == zion_labels.classes and back.tile == 64 and back.crs == "EPSG:32612"
    np.testing.assert_array_equal(back.windows, zion_labels.windows)
    np.testing.assert_array_equal(back.proportions, zion_labels.proportions)
    np.testing.assert_array_equal(back.bounds, zion_labels.bounds)
    assert back.meta["scheme"] == "nlcd8" and back.meta["stride"] == 48
    frame = zion_labels.to_frame()
    assert list(frame.columns[:8]) == ["row", "col", "tile", "minx", "miny", "maxx", "maxy", "land_cover_fraction"]
    assert "p_Forest" in frame.columns
    (tmp_path / "other.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="other.parquet: not a readable Parquet file"):
        read_land_cover_labels(tmp_path / "other.parquet")


def test_dataset_from_labels_file_equals_on_the_fly(zion_paths, zion_labels, tmp_path):
    path = zion_labels.to_parquet(tmp_path / "labels.parquet")
    images, product = zion_paths
    from_file = LandCoverTiles.from_files(images, labels=path, tile=64, stride=48)
    on_the_fly = LandCoverTiles.from_files(images, land_cover=product, scheme="nlcd8", tile=64, stride=48)
    assert len(from_file) == len(on_the_fly) == 667 and from_file.classes == on_the_fly.classes
    assert torch.equal(from_file.targets, on_the_fly.targets)
    sample = from_file[10]
    assert sample["image"].shape == (4, 64, 64) and sample["label"].shape == (8,)
    assert sample["label"].sum().item() == pytest.approx(1.0, abs=1e-6)
    batch = from_file.__getitems__([0, 10, 666])
    assert batch["label"].shape == (3, 8) and torch.equal(batch["image"][1], sample["image"])
    assert from_file.value_scale == 65535.0 and from_file.band_names == ("b2", "b3", "b4", "b5")
    # labels made for another tiling or another image are refused, naming the labels file
    with pytest.raises(DataError, match="labels.parquet: labels are for 64 px tiles, the dataset cuts 32 px tiles"):
        LandCoverTiles.from_files(images, labels=path, tile=32)
    shifted = tmp_path / "shifted.tif"
    with rasterio.open(images[0]) as source:
        _write(shifted, source.read(), crs=source.crs, transform=source.transform @ Affine.translation(64, 0))
    with pytest.raises(DataError, match="labels.parquet: label footprints differ"):
        LandCoverTiles.from_files(shifted, labels=path, tile=64, stride=48)
    with pytest.raises(ConfigError, match="exactly one of land_cover"):
        LandCoverTiles.from_files(images, land_cover=product, labels=path, scheme="nlcd8")


def test_build_spec_datamodule_and_dominant_class(data_root):
    spec = "landcover:" + ",".join(BANDS)  # relative to the data root, as in the shipped config
    options = {"land_cover": f"{ZION}/nlcd2011.tif", "scheme": "nlcd8", "tile": 64, "stride": 96}
    tiles = build_dataset(spec, root=data_root, **options)
    assert isinstance(tiles, LandCoverTiles) and len(tiles) == 15 * 12
    with pytest.raises(ConfigError, match="contradicts image_size"):
        build_dataset(spec, root=data_root, image_size=32, **options)
    with pytest.raises(ConfigError, match="unexpected option.*colour"):
        build_dataset(spec, root=data_root, colour=1, **options)
    batches = list(DataLoader(tiles, batch_size=64, collate_fn=collate_batched))
    assert batches[0]["label"].shape == (64, 8) and batches[0]["image"].shape == (64, 4, 64, 64)

    dm = PretrainDataModule(spec, root=str(data_root), batch_size=16, dataset_options=options)
    dm.setup()
    kwargs = dm.model_kwargs()
    assert kwargs["in_chans"] == 4 and kwargs["band_names"] == ("b2", "b3", "b4", "b5")
    assert kwargs["num_classes"] == 8 and kwargs["class_names"][3] == "Forest"
    assert kwargs["value_scale"] == 65535.0 and len(kwargs["mean"]) == len(kwargs["std"]) == 4
    assert 0.05 < min(kwargs["mean"]) and max(kwargs["mean"]) < 0.5  # Landsat DN / 65535

    scene = DominantClassTiles(tiles, indices=range(0, len(tiles), 2))
    assert len(scene) == 90 and scene.classes[3] == "Forest" and scene.labels.dtype == torch.int64
    batch = scene.__getitems__([0, 1])
    assert batch["label"].tolist() == scene.labels[:2].tolist()
    assert batch["label"].tolist() == [int(tiles.targets[0].argmax()), int(tiles.targets[2].argmax())]

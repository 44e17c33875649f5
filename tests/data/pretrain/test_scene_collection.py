"""Several scenes as one dataset: real Zion Landsat 8 cut into two scenes, the second in another UTM zone."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import LandCoverTiles, RasterTiles, SceneCollection, build_dataset, read_raster
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import pretrain

ZION = "zion_landsat8_nlcd2011"
BANDS = [f"{ZION}/landsat8_LC80380342015230_b{b}.tif" for b in (2, 3, 4, 5)]


@pytest.fixture(scope="module")
def scenes(data_root, tmp_path_factory):
    """West half as one 4-band file (EPSG:32612); east half as 4 single-band files warped to EPSG:32611."""
    out = tmp_path_factory.mktemp("scenes")
    raster = read_raster([data_root / p for p in BANDS])
    half = raster.width // 2
    west = out / "west.tif"
    profile = {"driver": "GTiff", "height": raster.height, "width": half, "count": 4, "dtype": "uint16",
               "crs": raster.crs, "transform": raster.transform}
    with rasterio.open(west, "w", **profile) as target:
        target.write(raster.array[:, :, :half])
        target.descriptions = ("b2", "b3", "b4", "b5")
    source_transform = window_transform(Window(half, 0, raster.width - half, raster.height), raster.transform)
    bounds = rasterio.transform.array_bounds(raster.height, raster.width - half, source_transform)
    transform, width, height = calculate_default_transform(raster.crs, "EPSG:32611", raster.width - half,
                                                           raster.height, *bounds, resolution=30)
    east = []
    for band, name in enumerate(("b2", "b3", "b4", "b5")):
        warped = np.zeros((height, width), dtype=np.uint16)
        reproject(raster.array[band, :, half:], warped, src_transform=source_transform, src_crs=raster.crs,
                  dst_transform=transform, dst_crs="EPSG:32611", resampling=Resampling.nearest, src_nodata=0,
                  dst_nodata=0)
        path = out / f"east_{name}.tif"
        with rasterio.open(path, "w", **{**profile, "count": 1, "height": height, "width": width,
                                         "crs": "EPSG:32611", "transform": transform, "nodata": 0}) as target:
            target.write(warped[None])
        east.append(path)
    return west, east, data_root / ZION / "nlcd2011.tif"


def test_scenes_join_in_order_each_aligned_in_its_own_crs(scenes):
    west, east, product = scenes
    options = {"land_cover": product, "scheme": "nlcd8", "tile": 64, "stride": 64, "max_nodata_fraction": 0.1}
    joined = build_dataset(f"landcover:{west};{','.join(map(str, east))}", **options)
    one = [LandCoverTiles.from_files(west, **options), LandCoverTiles.from_files(east, **options)]
    assert isinstance(joined, SceneCollection) and len(joined) == len(one[0]) + len(one[1])
    assert len(one[0]) > 20 and len(one[1]) > 20
    assert torch.equal(joined.targets, torch.cat([one[0].targets, one[1].targets]))
    assert joined.classes == one[0].classes and joined.num_classes == 8 and joined.target_kind == "proportions"
    assert joined.band_names == ("b2", "b3", "b4", "b5") and joined.value_scale == 65535.0
    n0 = len(one[0])
    order = [n0 + 3, 1, n0, 0, len(joined) - 1, 5]  # scenes interleaved, as a shuffled batch is
    batch = joined.__getitems__(order)
    assert batch["scene"].tolist() == [1, 0, 1, 0, 1, 0]
    assert batch["crs"] == ["EPSG:32611", "EPSG:32612"] * 3
    for row, index in enumerate(order):
        scene, local = (1, index - n0) if index >= n0 else (0, index)
        expected = one[scene][local]
        assert torch.equal(batch["image"][row], expected["image"])
        assert torch.equal(batch["label"][row], expected["label"])
        assert batch["bounds"][row].tolist() == list(expected["bounds"])
        assert batch["window"][row].tolist() == list(expected["window"])
    sample = joined[n0 + 3]
    assert sample["scene"] == 1 and torch.equal(sample["image"], batch["image"][0])
    assert joined.__getitems__([])["image"].shape == (0, 4, 64, 64)
    assert (joined.dominant_class() == joined.targets.argmax(1).numpy()).all()


def test_geotiff_scenes_without_labels(scenes):
    west, east, _ = scenes
    joined = build_dataset(f"geotiff:{west};{','.join(map(str, east))}", tile=64, max_nodata_fraction=0.1)
    assert isinstance(joined, SceneCollection) and not hasattr(joined, "targets")
    assert len(joined) == len(RasterTiles(read_raster(west), 64)) + len(
        RasterTiles(read_raster(east), 64, max_nodata_fraction=0.1))
    assert set(joined.__getitems__(range(len(joined)))["scene"].tolist()) == {0, 1}


def test_scenes_that_cannot_be_one_input_are_refused_by_name(scenes, tmp_path):
    west, east, product = scenes
    options = {"land_cover": product, "scheme": "nlcd8", "tile": 64, "max_nodata_fraction": 0.1}
    three_bands = ",".join(map(str, east[:3]))
    with pytest.raises(DataError, match=r"east_b2\.tif: bands \['b2', 'b3', 'b4'\] differ from .*west\.tif's"):
        build_dataset(f"landcover:{west};{three_bands}", **options)
    with pytest.raises(DataError, match=r"east_b2\.tif: classes .* differ"):
        SceneCollection([LandCoverTiles.from_files(west, **options),
                         LandCoverTiles.from_files(east, **{**options, "scheme": "nlcd"})])
    with pytest.raises(DataError, match="value scale 10000 differs"):
        SceneCollection([LandCoverTiles.from_files(west, **options),
                         LandCoverTiles.from_files(east, **options, value_scale=10000)])
    with pytest.raises(ConfigError, match="1 labels file\\(s\\) for 2 scene\\(s\\)"):
        build_dataset(f"landcover:{west};{east[0]}", labels=str(tmp_path / "a.parquet"), tile=64)
    with pytest.raises(ConfigError, match="within is one region"):
        build_dataset(f"landcover:{west};{','.join(map(str, east))}", within=(0, 0, 1, 1), **options)
    with pytest.raises(ConfigError, match="empty scene"):
        build_dataset(f"geotiff:{west};;{east[0]}", tile=64)


def test_geokr_pretrains_on_two_scenes(scenes, tmp_path):
    west, east, product = scenes
    cfg = load_config("geokr_resnet18_zion", {
        "data.dataset": f"landcover:{west};{','.join(map(str, east))}",
        "data.dataset_options": {"land_cover": str(product), "scheme": "nlcd8", "tile": 64, "stride": 64,
                                 "max_nodata_fraction": 0.1},
        "data.batch_size": 16, "trainer.max_steps": 3, "trainer.progress_bar": False,
        "trainer.out_dir": str(tmp_path / "run"),
    })
    ckpt = torch.load(pretrain(cfg), map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    assert ckpt["hyper_parameters"]["num_classes"] == 8
    assert ckpt["hyper_parameters"]["band_names"] == ("b2", "b3", "b4", "b5")

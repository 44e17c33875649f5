"""rspretrain prepare of georeferenced scenes: the prepared tiles, labels and statistics are exactly the in-memory
ones (two real scenes cut from the Zion Landsat 8 scene, with NLCD), the GeoKR stretch is stored as uint8, a kill is
resumed, and bad scenes are named."""

import signal

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import build_dataset
from rspretrain.data.band_statistics import band_statistics
from rspretrain.data.shards.manifest import read_manifest
from rspretrain.data.shards.open_prepared import open_prepared
from rspretrain.data.shards.prepare import prepare
from rspretrain.data.shards.shard_tiles import ShardTiles
from tests.data.shards.conftest import kill_when_chunks_exist

BANDS = ("b2", "b3", "b4", "b5")
OPTIONS = {"scheme": "nlcd8", "tile": 64, "stride": 48}


@pytest.fixture(scope="module")
def zion_scenes(data_root, tmp_path_factory):
    """Two scenes (overlapping row ranges of the Zion scene, each with its own geotransform) as stacks of
    single-band GeoTIFFs, written from the real rasters; and the spec naming both."""
    source = data_root / "zion_landsat8_nlcd2011"
    folder = tmp_path_factory.mktemp("zion_scenes")
    scenes = []
    for name, window in (("north", Window(0, 0, 1428, 600)), ("south", Window(100, 500, 1200, 628))):
        (folder / name).mkdir()
        files = []
        for band in BANDS:
            with rasterio.open(source / f"landsat8_LC80380342015230_{band}.tif") as src:
                profile = {**src.profile, "height": window.height, "width": window.width,
                           "transform": src.window_transform(window)}
                path = folder / name / f"scene_{name}_{band}.tif"
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(src.read(1, window=window), 1)
            files.append(str(path))
        scenes.append(",".join(files))
    return "landcover:" + ";".join(scenes), {**OPTIONS, "land_cover": str(source / "nlcd2011.tif")}


def _by_scene_and_window(dataset):
    """(scene, row, col) -> position, for an in-memory collection of scenes."""
    windows = np.concatenate([scene.tiles.windows[scene.tile_index] for scene in dataset.scenes])
    return {(int(s), int(r), int(c)): i for i, (s, (r, c)) in enumerate(zip(dataset.scene_of, windows.tolist()))}


def test_prepared_scenes_hold_exactly_the_in_memory_tiles_labels_and_statistics(zion_scenes, tmp_path):
    spec, options = zion_scenes
    manifest = prepare(spec, tmp_path / "tiles", workers=2, progress=False, **options)
    in_memory = build_dataset(spec, **options)
    assert manifest.complete and manifest.kind == "tiles" and manifest.count == len(in_memory) > 300
    assert manifest.dtype == "uint16" and manifest.tile == 64 and manifest.target_kind == "proportions"
    assert manifest.classes == list(in_memory.classes) and manifest.band_names == list(in_memory.band_names)
    assert [entry["tiles"] for entry in manifest.scenes] == [len(scene) for scene in in_memory.scenes]
    assert {entry["crs"] for entry in manifest.scenes} == {"EPSG:32612"}
    assert (manifest.mean, manifest.std) == band_statistics(in_memory, 2000, 0)  # the same numbers, not close ones

    streamed = ShardTiles(str(tmp_path / "tiles"), shuffle=False)
    assert len(streamed) == len(in_memory) and streamed.num_classes == 8 and streamed.target_kind == "proportions"
    position = _by_scene_and_window(in_memory)
    seen = set()
    for i in range(len(streamed)):
        sample = streamed[i]
        key = (int(sample["scene"]), *sample["window"].tolist())
        expected = in_memory[position[key]]
        assert torch.equal(sample["image"], expected["image"]) and sample["image"].dtype == torch.float32
        assert torch.equal(sample["label"], expected["label"])
        assert sample["bounds"].tolist() == list(expected["bounds"])
        seen.add(key)
    assert len(seen) == len(in_memory)  # every tile once


def test_the_geokr_stretch_and_patch_filters_are_stored_as_uint8_and_match(data_root, tmp_path):
    zion = data_root / "zion_landsat8_nlcd2011"
    spec = "landcover:" + ",".join(str(zion / f"landsat8_LC80380342015230_{b}.tif") for b in BANDS)
    options = {**OPTIONS, "land_cover": str(zion / "nlcd2011.tif"), "stride": 64, "stretch": "percentile",
               "patch_filters": True}
    manifest = prepare(spec, tmp_path / "tiles", workers=1, progress=False, **options)
    in_memory = build_dataset(spec, **options)
    assert manifest.dtype == "uint8" and manifest.value_scale == 255.0 and manifest.count == len(in_memory)
    dropped = manifest.scenes[0]["dropped"]
    assert {k: v for k, v in dropped.items() if k.startswith("patch_filter_")} == {
        f"patch_filter_{k}": v for k, v in in_memory.dropped_patch_filters.items()}
    streamed = ShardTiles(str(tmp_path / "tiles"), shuffle=False)
    position = {tuple(w): i for i, w in enumerate(in_memory.tiles.windows[in_memory.tile_index].tolist())}
    for i in range(len(streamed)):
        sample = streamed[i]
        assert torch.equal(sample["image"], in_memory[position[tuple(sample["window"].tolist())]]["image"])


def test_unlabelled_geotiff_scenes_prepare_and_open_as_tiles(data_root, prepared, tmp_path):
    path = data_root / "geotiff_samples"
    raster = sorted(path.glob("*.tif"))[0]
    manifest = prepare(f"geotiff:{raster}", tmp_path / "tiles", workers=1, progress=False, tile=64)
    dataset = open_prepared(str(tmp_path / "tiles"), shuffle=False)
    assert isinstance(dataset, ShardTiles) and manifest.target_kind is None and manifest.classes is None
    sample = dataset[0]
    assert "label" not in sample and sample["image"].shape == (manifest.in_chans, 64, 64)
    with pytest.raises(DataError, match="not of raster tiles"):
        ShardTiles(str(prepared))  # a set of image files


def test_a_killed_preparation_resumes_without_tiling_the_scenes_again(zion_scenes, tmp_path, caplog):
    spec, options = zion_scenes
    out = tmp_path / "tiles"
    script = ("import logging; logging.basicConfig(level=logging.INFO)\n"
              "from rspretrain.data.shards.prepare import prepare\n"
              f"prepare({spec!r}, {str(out)!r}, workers=2, chunk_bytes='256KB', progress=False, **{options!r})\n")
    returncode = kill_when_chunks_exist(script, out, 4)
    assert returncode == -signal.SIGKILL and 0 < len(list(out.glob("chunk-*.bin")))
    with pytest.raises(DataError, match="half-written"):
        read_manifest(out)
    with caplog.at_level("INFO", logger="rspretrain"):
        manifest = prepare(spec, out, workers=2, chunk_bytes="256KB", progress=False, **options)
    assert "2 of 2 scenes were tiled by an earlier run" in caplog.text
    streamed = ShardTiles(str(out), shuffle=False)
    keys = sorted((int(streamed[i]["scene"]), *streamed[i]["window"].tolist()) for i in range(len(streamed)))
    assert manifest.complete and len(keys) == len(set(keys)) == manifest.count == len(build_dataset(spec, **options))


def test_a_scene_that_cannot_be_tiled_is_named_and_options_are_checked(zion_scenes, tmp_path):
    spec, options = zion_scenes
    broken = tmp_path / "broken_b2.tif"
    broken.write_bytes(b"not a GeoTIFF")
    with pytest.raises(DataError, match=r"1 of 2 scene\(s\).*broken_b2.tif"):
        prepare(spec.split(";")[0] + f";{broken}", tmp_path / "out", workers=2, progress=False, **options)
    with pytest.raises(ConfigError, match="unexpected option"):
        prepare(spec, tmp_path / "out2", progress=False, **options, extensions=[".tif"])


def test_scenes_and_the_land_cover_product_are_read_from_an_s3_compatible_server(data_root, s3_server, monkeypatch,
                                                                                tmp_path):
    # GDAL reads s3:// (as /vsis3/) with ranged requests from moto's server on localhost; the tiles are the local ones.
    import boto3

    zion = data_root / "zion_landsat8_nlcd2011"
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="scenes")
    names = [f"landsat8_LC80380342015230_{b}.tif" for b in BANDS] + ["nlcd2011.tif"]
    for name in names:
        client.upload_file(str(zion / name), "scenes", f"zion/{name}")
    for key, value in {"AWS_S3_ENDPOINT": s3_server.removeprefix("http://"), "AWS_HTTPS": "NO",
                       "AWS_VIRTUAL_HOSTING": "FALSE"}.items():
        monkeypatch.setenv(key, value)
    within = {"within": [301905.0, 4154085.0 - 3840.0, 301905.0 + 3840.0, 4154085.0]}  # the corner: 16 tiles
    options = {**OPTIONS, "tile": 32, "stride": 32, **within}
    remote = "landcover:" + ",".join(f"s3://scenes/zion/{n}" for n in names[:4])
    manifest = prepare(remote, tmp_path / "tiles", workers=2, progress=False, land_cover="s3://scenes/zion/nlcd2011.tif",
                       **options)
    local = build_dataset("landcover:" + ",".join(str(zion / n) for n in names[:4]),
                          land_cover=str(zion / "nlcd2011.tif"), **options)
    assert manifest.count == len(local) == 16 and manifest.scenes[0]["files"][0] == f"/vsis3/scenes/zion/{names[0]}"
    streamed = ShardTiles(str(tmp_path / "tiles"), shuffle=False)
    position = {tuple(w): i for i, w in enumerate(local.tiles.windows[local.tile_index].tolist())}
    for i in range(len(streamed)):
        sample = streamed[i]
        expected = local[position[tuple(sample["window"].tolist())]]
        assert torch.equal(sample["image"], expected["image"]) and torch.equal(sample["label"], expected["label"])
    with pytest.raises(DataError, match="/vsis3/scenes/zion/missing_b2.tif: not a readable raster"):
        prepare("landcover:s3://scenes/zion/missing_b2.tif", tmp_path / "missing", progress=False,
                land_cover="s3://scenes/zion/nlcd2011.tif", **options)

"""torchgeo datasets behind the toolkit's dataset contract (``torchgeo:ClassName{...}``), on files written here."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rspretrain.core.bands import canonical_bands
from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import build_dataset, collate_batched
from rspretrain.data.torchgeo_source import TorchGeoSource
from tests.data._torchgeo_fakes import EUROSAT_BANDS, window_of, write_eurosat, write_sentinel2


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    root = tmp_path_factory.mktemp("eurosat")
    return root, write_eurosat(root)


@pytest.fixture(scope="module")
def sentinel2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s2")
    return folder, write_sentinel2(folder)


def test_a_nongeo_dataset_gives_its_pixels_in_the_asked_band_order_with_labels(eurosat):
    root, arrays = eurosat
    train = build_dataset(f"torchgeo:EuroSAT{{root: {root}, bands: [B04, B03, B02]}}", split="train")
    test = build_dataset("torchgeo:EuroSAT{bands: [B04, B03, B02]}", root=root, split="test")  # root: the data root
    assert isinstance(train, TorchGeoSource) and (len(train), len(test)) == (24, 12)
    assert train.classes == test.classes == ["AnnualCrop", "Forest", "SeaLake"]
    assert train.band_names == ("B04", "B03", "B02") and canonical_bands(train.band_names) == ("red", "green", "blue")
    assert train.value_scale == 65535.0  # the files' uint16, as geotiff: reads them
    assert train.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    batch = train.__getitems__([0, 9, 23])
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (3, 3, 16, 16)
    assert batch["label"].tolist() == [0, 1, 2]
    order = [EUROSAT_BANDS.index(b) for b in ("B04", "B03", "B02")]
    files = [p for p, _ in train.dataset.imgs]
    for row, index in enumerate([0, 9, 23]):
        expected = arrays[files[index].rsplit("/", 1)[-1]][order].astype(np.float32)
        assert np.array_equal(batch["image"][row].numpy(), expected)
    # one sample is the batch's row; a DataLoader takes the batch as it is
    assert torch.equal(train[9]["image"], batch["image"][1]) and int(train[9]["label"]) == 1
    loaded = next(iter(DataLoader(train, batch_size=5, collate_fn=collate_batched)))
    assert loaded["image"].shape == (5, 3, 16, 16) and loaded["label"].tolist() == [0] * 5


def test_all_bands_value_scale_and_size_options(eurosat):
    root, _ = eurosat
    every = build_dataset("torchgeo:EuroSAT", root=root, split="test", image_size=8, value_scale=10000)
    # torchgeo's own order (B8A last); bare B10/B11 would be Landsat's thermal bands: written unambiguously
    assert every.band_names == (*EUROSAT_BANDS[:9], "S2:B10", "S2:B11", "B12", "B8A")
    assert canonical_bands(every.band_names)[9:] == ("cirrus", "swir1", "swir2", "nir_narrow")
    assert every.value_scale == 10000.0 and every[0]["image"].shape == (13, 8, 8)
    named = build_dataset(f"torchgeo:EuroSAT{{root: {root}, bands: [B08, B04], band_names: [nir, red], image_size: 4}}",
                          split="train")
    assert named.band_names == ("nir", "red") and named[0]["image"].shape == (2, 4, 4)


def test_a_geodataset_is_cut_into_its_samplers_chips_with_their_bounds(sentinel2):
    folder, arrays = sentinel2
    chips = build_dataset(f"torchgeo:Sentinel2{{paths: {folder}, bands: [B04, B03, B02]}}",
                          sampler_options={"size": 16})
    assert len(chips) == 9 and chips.band_names == ("B04", "B03", "B02") and chips.classes is None
    batch = chips.__getitems__(list(range(9)))
    assert batch["image"].shape == (9, 3, 16, 16) and "label" not in batch
    assert batch["crs"] == ["EPSG:32632"] * 9
    windows = set()
    for image, bounds in zip(batch["image"], batch["bounds"]):
        rows, cols = window_of(bounds)
        windows.add((rows.start, cols.start))
        expected = np.stack([arrays[b][rows, cols] for b in ("B04", "B03", "B02")]).astype(np.float32)
        assert np.array_equal(image.numpy(), expected)  # the very pixels under the chip's bounds, in band order
    assert windows == {(r, c) for r in (0, 16, 32) for c in (0, 16, 32)}  # the grid covers the tile once

    random = {"sampler": "RandomGeoSampler", "sampler_options": {"size": 16, "length": 6, "seed": 3}, "value_scale": 10000}
    spec = f"torchgeo:Sentinel2{{paths: {folder}, bands: [B02, B03, B04, B08]}}"
    state = torch.random.get_rng_state()
    first, again = build_dataset(spec, **random), build_dataset(spec, **random)
    assert torch.equal(torch.random.get_rng_state(), state)  # drawn from a forked generator: the caller's is untouched
    other = build_dataset(spec, **{**random, "sampler_options": {"size": 16, "length": 6, "seed": 4}})
    bounds = first.__getitems__(list(range(6)))["bounds"]
    assert torch.equal(bounds, again.__getitems__(list(range(6)))["bounds"])  # the same chips on every build
    assert not torch.equal(bounds, other.__getitems__(list(range(6)))["bounds"])
    assert first.value_scale == 10000.0 and first.band_names == ("B02", "B03", "B04", "B08")
    image = first[2]["image"]
    rows, cols = window_of(first[2]["bounds"])
    assert np.array_equal(image[3].numpy(), arrays["B08"][rows, cols].astype(np.float32))


def test_a_pretraining_datamodule_reads_a_torchgeo_spec(sentinel2):
    from rspretrain.pretrain.datamodule import PretrainDataModule

    folder, _ = sentinel2
    module = PretrainDataModule(dataset="torchgeo:Sentinel2", batch_size=4, image_size=16,
                                dataset_options={"paths": str(folder), "bands": ["B02", "B03", "B04", "B08"],
                                                 "value_scale": 10000})
    module.setup()
    kwargs = module.model_kwargs()
    assert kwargs["in_chans"] == 4 and kwargs["band_names"] == ("B02", "B03", "B04", "B08")
    assert kwargs["value_scale"] == 10000.0 and module.samples_per_epoch() == 9 and module.classes is None
    # band statistics over the 9 chips of 16 px: band k's mean is 1000 (k + 1) + the mean position value
    positions = np.arange(48 * 48).reshape(48, 48)[:48, :48].mean()
    assert np.allclose(kwargs["mean"], [(1000 * (k + 1) + positions) / 10000 for k in range(4)], atol=1e-6)
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (4, 4, 16, 16) and batch["bounds"].shape == (4, 4)


@pytest.mark.parametrize("spec, options, error, message", [
    ("torchgeo:EuroSat", {}, ConfigError, (r"no dataset class 'EuroSat'; did you mean EuroSAT.*dataset classes: .*"
                                          r"Sentinel2")),
    ("torchgeo:EuroSAT{{root: {root}, colour: red}}", {}, ConfigError,
     r"unexpected option\(s\) colour; EuroSAT takes root, bands"),
    ("torchgeo:EuroSAT{{root: {root}, download: true}}", {}, ConfigError, "download is refused"),
    ("torchgeo:EuroSAT{{root: {root}/nowhere}}", {}, DataError, r"no EuroSAT data found in root='.*nowhere'"),
    ("torchgeo:EuroSAT{{root: {root}, bands: [B99]}}", {}, DataError, "'B99' is an invalid band name"),
    ("torchgeo:EuroSAT{{root: {root}, bands: [B04, B03]}}", {"band_names": ["red"]}, ConfigError,
     r"band_names lists 1 bands \['red'\] but its images have 2"),
    ("torchgeo:EuroSAT{{root: {root}}}", {"sampler": "GridGeoSampler"}, ConfigError, "sampler applies to GeoDatasets"),
    ("torchgeo:EuroSAT{{root: {root}, bands: [B04}}", {}, ConfigError, "not a YAML mapping"),
    ("torchgeo:Sentinel2{{paths: {root}, bands: [B04]}}", {"sampler": "RandomBatchGeoSampler"}, ConfigError,
     "not a torchgeo single-chip sampler; use one of GridGeoSampler, PreChippedGeoSampler, RandomGeoSampler"),
])
def test_bad_specs_are_one_line_errors_naming_the_dataset(eurosat, sentinel2, spec, options, error, message):
    root = sentinel2[0] if "Sentinel2" in spec else eurosat[0]
    with pytest.raises(error, match=message) as raised:
        build_dataset(spec.format(root=root), **options)
    assert "\n" not in str(raised.value) and "torchgeo:" in str(raised.value)


def test_a_split_the_class_lacks_is_refused_also_when_evaluation_asks_for_test(sentinel2):
    from rspretrain.downstream.frozen.scene_benchmark import load_scene_splits

    folder, _ = sentinel2
    with pytest.raises(ConfigError, match="Sentinel2 has no splits .* no 'test' split"):
        build_dataset(f"torchgeo:Sentinel2{{paths: {folder}, bands: [B04]}}", split="test")
    with pytest.raises(ConfigError, match="has no splits"):
        load_scene_splits(f"torchgeo:Sentinel2{{paths: {folder}, bands: [B04], image_size: 16}}")

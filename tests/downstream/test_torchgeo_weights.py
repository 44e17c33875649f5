"""torchgeo's published weights as an evaluation source, read from a local file built here in torchgeo's format (a
state dict of the timm model saved with ``torch.save``, like its published ``.pth`` files): nothing is downloaded."""

import pytest
import torch

from rspretrain.core.bands import check_bands
from rspretrain.core.errors import BandMismatchError, ConfigError, DataError
from rspretrain.downstream.sources import encoder_specs
from rspretrain.downstream.torchgeo_weights import band_names, preprocessing, resolve_weights
from tests.data._torchgeo_fakes import write_torchgeo_weights

S2_RGB = "torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO"


@pytest.mark.parametrize("name, scale, mean, std, size, bands", [
    # SSL4EO-S12: Resize 256, CenterCrop 224, Normalize(0, 10000)
    ("ResNet18_Weights.SENTINEL2_RGB_MOCO", 10000.0, [0.0] * 3, [1.0] * 3, 224, ("S2:B04", "S2:B03", "S2:B02")),
    # Satlas: RGB / 255, the other bands / 8160 = 255 * 32
    ("ResNet50_Weights.SENTINEL2_SI_MS_SATLAS", 255.0, [0.0] * 9, [1.0] * 3 + [32.0] * 6, 256,
     ("S2:B04", "S2:B03", "S2:B02", "S2:B05", "S2:B06", "S2:B07", "S2:B08", "S2:B11", "S2:B12")),
    # SeCo: (x - min) / (max - min) * 255, then ImageNet's mean/std: offsets, so raw units (scale 1)
    ("ResNet18_Weights.SENTINEL2_RGB_SECO", 1.0, [3 + 0.485 * 85 / 255, 2 + 0.456 * 101 / 255, 0.406 * 129 / 255],
     [0.229 * 85 / 255, 0.224 * 101 / 255, 0.225 * 129 / 255], 224, ("S2:B04", "S2:B03", "S2:B02")),
])
def test_the_weights_preprocessing_and_bands_come_from_the_enum(name, scale, mean, std, size, bands):
    weight = resolve_weights(name)
    value_scale, got_mean, got_std, got_size = preprocessing(weight)
    assert value_scale == scale and got_size == size and band_names(weight) == bands
    assert got_mean == pytest.approx(mean) and got_std == pytest.approx(std)


def test_band_names_are_read_with_the_sensor_the_weights_name():
    s2_all = band_names(resolve_weights("ResNet18_Weights.SENTINEL2_ALL_MOCO"))
    # torchgeo's EuroSAT in SSL4EO's band order matches; its own order (B8A last) does not, and the message names both
    check_bands(s2_all, ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "S2:B10", "S2:B11",
                         "B12"), "here")
    with pytest.raises(BandMismatchError, match=r"band order \['B01'.*'B8A'\].* differs from the model's \['S2:B01'"):
        check_bands(s2_all, ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "S2:B10", "S2:B11", "B12",
                             "B8A"), "here")
    # Landsat 5 TM's B1 is blue, OLI's B1 coastal: TM weights match only themselves
    tm = band_names(resolve_weights("ResNet18_Weights.LANDSAT_TM_TOA_MOCO"))
    assert tm[0] == "TM:B1"
    with pytest.raises(BandMismatchError):
        check_bands(tm, ("B1", "B2", "B3", "B4", "B5", "B6", "B7"), "here")
    assert band_names(resolve_weights("ResNet18_Weights.LANDSAT_OLI_TIRS_TOA_MOCO"))[:2] == ("L8:B1", "L8:B2")


def test_a_local_weights_file_becomes_the_encoder_next_to_a_random_init_one(tmp_path):
    state = write_torchgeo_weights(tmp_path / "resnet18_sentinel2_rgb_moco.pth")
    spec, random = encoder_specs(S2_RGB, weights_file=tmp_path / "resnet18_sentinel2_rgb_moco.pth", image_size=32)
    assert spec.name == "ResNet18_Weights.SENTINEL2_RGB_MOCO" and random.name == "random-init"
    assert spec.band_names == random.band_names == ("S2:B04", "S2:B03", "S2:B02")
    assert (spec.value_scale, spec.mean, spec.std, spec.image_size) == (10000.0, (0.0,) * 3, (1.0,) * 3, 32)
    loaded = spec.encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert spec.encoder.num_classes == 0 and not spec.encoder.training
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert spec.encoder(x).shape == (2, 512)
        assert not torch.allclose(spec.encoder(x), random.encoder(x))  # the file's weights, not the seed's
    assert encoder_specs(S2_RGB, weights_file=tmp_path / "resnet18_sentinel2_rgb_moco.pth")[0].image_size == 224


@pytest.mark.parametrize("make, message", [
    (lambda p: write_torchgeo_weights(p, drop="layer3.0.conv2.weight"),
     (r"not in the layout of torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO \(a state dict of timm's resnet18 with 3 "
     r"input bands\): missing key 'layer3.0.conv2.weight' \(1 of")),
    (lambda p: write_torchgeo_weights(p, in_chans=13), r"'conv1.weight' has shape \(64, 13, 7, 7\), expected \(64, 3, 7, 7\)"),
    (lambda p: write_torchgeo_weights(p, arch="resnet50"), "missing key|unexpected key|has shape"),
    (lambda p: torch.save({"state_dict": {}, "hyper_parameters": {"model": "resnet18"}}, p),
     r"it holds \['hyper_parameters', 'state_dict'\], not tensors"),
    (lambda p: p.write_bytes(b"not a torch file"), "not a torch weights file"),
])
def test_a_file_not_in_the_weights_layout_is_one_line_naming_it(tmp_path, make, message):
    path = tmp_path / "w.pth"
    make(path)
    with pytest.raises(DataError, match=message) as raised:
        encoder_specs(S2_RGB, weights_file=path)
    assert str(raised.value).startswith(str(path)) and "\n" not in str(raised.value)


@pytest.mark.parametrize("source, weights_file, message", [
    ("torchgeo:ResNet18_Weights.NOT_THERE", "w.pth", r"ResNet18_Weights has no 'NOT_THERE'; it has .*SENTINEL2_RGB_MOCO"),
    ("torchgeo:ResNet19_Weights.SENTINEL2_RGB_MOCO", "w.pth", r"no such torchgeo weights; .*enums: .*ResNet18_Weights"),
    ("torchgeo:DOFABase16_Weights.DOFA_MAE", "w.pth", (r"not scorable as a timm backbone .*scorable weights: .*"
                                                     r"ResNet18_Weights.SENTINEL2_RGB_MOCO")),
    (S2_RGB, None, r"give its weights file with --weights-file PATH .*https://hf.co/torchgeo/resnet18_sentinel2_rgb_moco"),
    ("random:resnet18", "w.pth", "it is the file of a torchgeo:ENUM.MEMBER source, not of random:resnet18"),
])
def test_unknown_weights_or_a_missing_file_name_what_exists(source, weights_file, message):
    with pytest.raises(ConfigError, match=message):
        encoder_specs(source, weights_file=weights_file)

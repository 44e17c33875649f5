import pytest

from rspretrain.core.bands import canonical_band, check_bands, rgb_indices, same_bands
from rspretrain.core.errors import BandMismatchError


def test_sensor_ids_and_spellings_map_to_one_name():
    assert canonical_band("B04") == canonical_band("b4") == canonical_band("Red") == canonical_band("R") == "red"
    assert canonical_band("B08") == canonical_band("NIR") == canonical_band("L8:B5") == "nir"
    assert canonical_band("B05") == "red_edge1" and canonical_band("B5") == "nir"  # padded = Sentinel-2
    assert canonical_band("B8A") == canonical_band("nir08") == "nir_narrow"
    assert canonical_band("Red Edge 1") == canonical_band("red-edge-1") == "red_edge1"
    assert canonical_band("S2:B11") == "swir1" and canonical_band("L9:B11") == "tir2"
    assert canonical_band("B11") == "b11"  # ambiguous between the sensors: only matches itself
    assert canonical_band("VV") == "vv"


def test_the_one_check_accepts_aliases_and_names_the_place_when_meaning_or_count_differ():
    check_bands(["red", "green", "blue"], ["B04", "B03", "B02"], "x.tif")
    check_bands(["Red", "Green", "Blue"], ["red", "green", "blue"], "x.tif")
    assert same_bands(["b2", "b3", "b4", "b5"], ["blue", "green", "red", "nir"])
    with pytest.raises(BandMismatchError, match=r"x.tif: band order .*read as \['blue', 'green', 'red'\]"):
        check_bands(["red", "green", "blue"], ["B02", "B03", "B04"], "x.tif")
    with pytest.raises(BandMismatchError, match="x.tif: data has 4 bands but the model expects 3"):
        check_bands(None, None, "x.tif", in_chans=3, actual_count=4)
    with pytest.raises(BandMismatchError, match="B11"):
        check_bands(["S2:B11"], ["B11"], "x.tif")  # a bare B11 is not known to be Sentinel-2's


def test_rgb_bands_are_found_under_any_sensor_naming():
    assert rgb_indices(["B02", "B03", "B04", "B08"], 4) == (2, 1, 0)
    assert rgb_indices(["b2", "b3", "b4", "b5"], 4) == (2, 1, 0)
    assert rgb_indices(None, 3) == (0, 1, 2) and rgb_indices(None, 4) is None
    assert rgb_indices(["vv", "vh"], 2) is None


def test_a_count_mismatch_names_both_band_lists_when_both_sides_name_them():
    with pytest.raises(BandMismatchError, match=r"x.tif: data has 2 bands but the model expects 3 \(data \['B08', "
                                                r"'B04'\], model \['red', 'green', 'blue'\]\)"):
        check_bands(["red", "green", "blue"], ["B08", "B04"], "x.tif", in_chans=3, actual_count=2)

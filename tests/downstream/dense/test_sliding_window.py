import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from rspretrain.core.errors import DataError
from rspretrain.downstream.dense.sliding_window import (
    NODATA_LABEL,
    blend_weights,
    predict_image,
    predict_raster,
    window_starts,
)


def identity(windows):
    """Scores = the first input's pixels: blending must give back the input exactly."""
    return windows[0].float()


def test_window_starts_cover_the_axis_with_the_last_window_flush():
    assert window_starts(10, 4, 1) == [0, 3, 6]
    assert window_starts(11, 4, 1) == [0, 3, 6, 7]
    assert window_starts(3, 4, 1) == [0]
    for length in range(1, 40):
        for tile, overlap in ((8, 0), (8, 2), (5, 4)):
            starts = window_starts(length, tile, overlap)
            covered = np.zeros(length, bool)
            for s in starts:
                covered[s : s + tile] = True
            assert covered.all() and starts == sorted(set(starts))


def test_blend_weights_are_positive_and_one_inside():
    w = blend_weights(8, 3)
    assert (w > 0).all() and w[3:5, 3:5].eq(1).all() and w[0, 0] == pytest.approx(1 / 16)
    assert blend_weights(6, 0).eq(1).all()


@pytest.mark.parametrize("shape,tile,overlap", [((3, 37, 50), 16, 5), ((2, 10, 7), 16, 4), ((1, 64, 64), 32, 0)])
def test_predict_image_gives_back_the_input_for_an_identity_model(shape, tile, overlap):
    image = torch.rand(shape)
    out = predict_image(identity, [image], tile, overlap, batch_size=3)
    assert out.shape == shape
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)


def _crop_real_raster(source_path, path, window):
    with rasterio.open(source_path) as src:
        profile = src.profile | {"height": window.height, "width": window.width,
                                 "transform": src.window_transform(window)}
        data = src.read(window=window)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return data, profile


def test_predict_raster_keeps_crs_transform_and_covers_every_pixel_once(data_root, tmp_path):
    """Identity scores on a real GeoTIFF crop (with nodata corners): the blended output equals the input."""
    source = data_root / "geotiff_samples" / "rasterio_RGB.byte.tif"
    data, profile = _crop_real_raster(source, tmp_path / "crop.tif", Window(0, 0, 170, 150))
    out = predict_raster(identity, [tmp_path / "crop.tif"], tmp_path / "scores.tif", tile=32, overlap=8,
                         num_outputs=3, progress=False)
    with rasterio.open(out) as dst:
        assert dst.crs == profile["crs"] and dst.transform == profile["transform"]
        assert (dst.height, dst.width, dst.count) == (150, 170, 3)
        scores = dst.read()
    valid = (data != profile["nodata"]).all(axis=0)
    assert 0.1 < valid.mean() < 0.95  # the crop holds nodata and data
    np.testing.assert_allclose(scores[:, valid], data[:, valid].astype(np.float32), atol=1e-3)

    labels_path = predict_raster(identity, [tmp_path / "crop.tif"], tmp_path / "labels.tif", tile=32, overlap=8,
                                 num_outputs=3, to_labels=lambda s: s.argmax(0), progress=False,
                                 tags={"classes": "r,g,b"})
    with rasterio.open(labels_path) as dst:
        assert dst.crs == profile["crs"] and dst.transform == profile["transform"] and dst.dtypes == ("uint8",)
        assert dst.nodata == NODATA_LABEL and dst.tags()["classes"] == "r,g,b"
        labels = dst.read(1)
    assert (labels[~valid] == NODATA_LABEL).all()
    np.testing.assert_array_equal(labels[valid], data.argmax(0)[valid])


def test_predict_raster_pairs_must_share_a_grid(data_root, tmp_path):
    source = data_root / "geotiff_samples" / "rasterio_RGB.byte.tif"
    _crop_real_raster(source, tmp_path / "a.tif", Window(0, 0, 40, 30))
    _crop_real_raster(source, tmp_path / "b.tif", Window(10, 0, 40, 30))
    with pytest.raises(DataError, match="b.tif: grid or band count differs"):
        predict_raster(lambda w: (w[0] - w[1]).float(), [tmp_path / "a.tif", tmp_path / "b.tif"],
                       tmp_path / "out.tif", 16, 4, 3, progress=False)
    assert not (tmp_path / "out.tif").exists()


def test_predict_raster_of_a_change_pair_finds_the_changed_block(data_root, tmp_path):
    source = data_root / "geotiff_samples" / "rasterio_RGB.byte.tif"
    data, profile = _crop_real_raster(source, tmp_path / "before.tif", Window(300, 300, 70, 50))
    after = data.copy()
    after[:, 10:30, 40:65] = np.clip(after[:, 10:30, 40:65].astype(int) + 60, 0, 255)
    with rasterio.open(tmp_path / "after.tif", "w", **profile) as dst:
        dst.write(after)

    def difference(windows):
        return (windows[0].float() - windows[1].float()).abs().mean(1, keepdim=True) / 60

    out = predict_raster(difference, [tmp_path / "before.tif", tmp_path / "after.tif"], tmp_path / "change.tif",
                         tile=24, overlap=6, num_outputs=1, to_labels=lambda s: (s[0] > 0.5).to(torch.uint8),
                         progress=False)
    with rasterio.open(out) as dst:
        assert dst.crs == profile["crs"] and dst.transform == profile["transform"]
        change = dst.read(1)
    expected = np.zeros((50, 70), np.uint8)
    expected[10:30, 40:65] = (np.abs(after[:, 10:30, 40:65].astype(int) - data[:, 10:30, 40:65]).mean(0) / 60 > 0.5)
    expected[((data == 0) | (after == 0)).any(axis=0)] = NODATA_LABEL  # a few dark pixels equal nodata (0)
    np.testing.assert_array_equal(change, expected)
    assert (change == 1).sum() > 300

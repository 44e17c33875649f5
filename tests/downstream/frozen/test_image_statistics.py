import numpy as np
import pytest
import torch

import rspretrain.downstream.frozen.image_statistics as image_statistics
from rspretrain.core.errors import DataError
from rspretrain.downstream.frozen.image_statistics import (
    IMAGE_STATISTICS_NAMES,
    image_statistics_feature_names,
    image_statistics_features,
)

from ._fakes import FakeSceneDataset


def test_constant_image():
    images = torch.empty(1, 2, 5, 5, dtype=torch.uint8)
    images[:, 0] = 51  # 0.2
    images[:, 1] = 204  # 0.8
    features, labels = image_statistics_features(FakeSceneDataset(images, [3], band_names=("a", "b")))
    assert features.shape == (1, 14) and features.dtype == np.float32
    # Band-major layout: [mean, std, p5, p25, p50, p75, p95] per band.
    expected = [0.2, 0, 0.2, 0.2, 0.2, 0.2, 0.2] + [0.8, 0, 0.8, 0.8, 0.8, 0.8, 0.8]
    np.testing.assert_allclose(features[0], expected, atol=1e-7)
    np.testing.assert_array_equal(labels, [3])


def test_gradient_image():
    # Pixel values 0..15 with value_scale 15: scaled values k/15. Linear-interpolated percentile q sits at position
    # q/100 * 15, i.e. value q/100 exactly; mean 0.5; population std sqrt((16^2 - 1) / 12) / 15.
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    features, _ = image_statistics_features(FakeSceneDataset(images, [0], band_names=("g",), value_scale=15.0))
    expected = [0.5, np.sqrt(255 / 12) / 15, 0.05, 0.25, 0.5, 0.75, 0.95]
    np.testing.assert_allclose(features[0], expected, rtol=1e-6)


def test_reversed_gradient_has_same_statistics_and_bands_are_independent():
    up = torch.arange(16, dtype=torch.uint8).view(4, 4)
    images = torch.stack([up, up.flip(0) * 2]).unsqueeze(0)  # band 1 = reversed gradient with twice the range
    features, _ = image_statistics_features(FakeSceneDataset(images, [0], band_names=("a", "b"), value_scale=30.0))
    np.testing.assert_allclose(features[0, 7:], 2 * features[0, :7], rtol=1e-6)


def test_chunked_computation_equals_single_pass(monkeypatch):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (7, 3, 6, 6), generator=g, dtype=torch.uint8)
    dataset = FakeSceneDataset(images, [0, 1, 2, 0, 1, 2, 0])
    whole, labels = image_statistics_features(dataset, batch_size=1024)
    monkeypatch.setattr(image_statistics, "_MAX_VALUES_PER_CHUNK", 200)  # 108 values per image -> 1 image per chunk
    chunked, chunked_labels = image_statistics_features(dataset, batch_size=3)
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(chunked_labels, labels)
    # And against numpy directly for one image/band.
    x = images[4, 1].numpy().astype(np.float64) / 255
    np.testing.assert_allclose(whole[4, 7:14], [x.mean(), x.std(), *np.percentile(x, [5, 25, 50, 75, 95])], rtol=1e-6)


def test_feature_names_and_empty_dataset():
    assert IMAGE_STATISTICS_NAMES == ("mean", "std", "p5", "p25", "p50", "p75", "p95")
    names = image_statistics_feature_names(("red", "nir"))
    assert len(names) == 14 and names[0] == "red/mean" and names[8] == "nir/std"
    with pytest.raises(DataError):
        image_statistics_features(FakeSceneDataset(torch.zeros(0, 3, 2, 2, dtype=torch.uint8), torch.zeros(0)))

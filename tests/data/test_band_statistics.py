import torch

from rspretrain.data import InMemoryImageDataset
from rspretrain.data.band_statistics import band_statistics


def test_band_statistics_match_direct_computation_across_chunks():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (50, 4, 9, 7), dtype=torch.uint8)
    ds = InMemoryImageDataset(images, band_names=("b", "g", "r", "n"))
    mean, std = band_statistics(ds, max_images=50, chunk=8)
    x = images.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), x.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)


def test_array_band_statistics_weigh_every_pixel_of_images_of_any_size():
    import numpy as np
    import pytest

    from rspretrain.core.errors import DataError
    from rspretrain.data.band_statistics import array_band_statistics

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for h, w in ((5, 7), (11, 3), (2, 2))]
    mean, std = array_band_statistics(images, 255.0)
    pixels = np.concatenate([im.reshape(3, -1) for im in images], axis=1) / 255.0  # every pixel once
    np.testing.assert_allclose(mean, pixels.mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=1), atol=1e-12)
    assert not np.allclose(mean, np.mean([im.reshape(3, -1).mean(axis=1) / 255 for im in images], axis=0))
    with pytest.raises(DataError, match="levir/train: no images"):
        array_band_statistics([], 255.0, "levir/train")

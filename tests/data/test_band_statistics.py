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

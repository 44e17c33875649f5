import torch

from rspretrain.data import InMemoryImageDataset
from rspretrain.pretrain.datamodule import PretrainDataModule, band_statistics


def test_band_statistics_match_direct_computation_across_chunks():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (50, 4, 9, 7), dtype=torch.uint8)
    ds = InMemoryImageDataset(images, band_names=("b", "g", "r", "n"))
    mean, std = band_statistics(ds, max_images=50, chunk=8)
    x = images.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), x.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)


def test_datamodule_batches_real_eurosat(data_root):
    dm = PretrainDataModule("eurosat", root=str(data_root), max_per_class=10, batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 3, 64, 64) and batch["image"].dtype == torch.uint8
    kwargs = dm.model_kwargs()
    assert kwargs["in_chans"] == 3 and kwargs["band_names"] == ("red", "green", "blue")
    assert len(kwargs["mean"]) == 3 and all(0 < m < 1 for m in kwargs["mean"])
    assert len(dm.train_dataloader()) == 100 // 16  # drop_last

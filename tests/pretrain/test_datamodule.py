import torch

from rspretrain.pretrain.datamodule import PretrainDataModule


def test_datamodule_batches_real_eurosat(data_root):
    dm = PretrainDataModule("eurosat", root=str(data_root), max_per_class=10, batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 3, 64, 64) and batch["image"].dtype == torch.uint8
    kwargs = dm.model_kwargs()
    assert kwargs["in_chans"] == 3 and kwargs["band_names"] == ("red", "green", "blue")
    assert len(kwargs["mean"]) == 3 and all(0 < m < 1 for m in kwargs["mean"])
    assert len(dm.train_dataloader()) == 100 // 16  # drop_last

"""A user's own method and datamodule, by import path / class_path, train, checkpoint and reload with no
registration: the config system's promise that a method is one file of one's own."""

import sys
import textwrap

import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import load_checkpoint, load_method, pretrain

USER_CODE = textwrap.dedent('''
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from rspretrain.data.io.collate import collate_batched
    from rspretrain.pretrain.methods.moco import MoCoV2


    class MyMoCo(MoCoV2):
        """MoCo v2 with the key encoder's momentum pinned (a user's variant, not registered)."""

        method_name = "my_moco"


    class Noise(Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"image": torch.randint(0, 256, (5, 32, 32), dtype=torch.uint8, generator=g)}


    class FiveBandNoise(L.LightningDataModule):
        def __init__(self, batch_size: int = 8):
            super().__init__()
            self.batch_size = batch_size

        def setup(self, stage=None):
            self.dataset = Noise()

        def model_kwargs(self):
            return {"in_chans": 5, "band_names": ["B02", "B03", "B04", "B08", "B11"], "mean": [0.5] * 5,
                    "std": [0.25] * 5, "value_scale": 255.0}

        def train_dataloader(self):
            return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=True)


    class NoLink(FiveBandNoise):
        model_kwargs = None
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rs_code.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rs_code"
    sys.modules.pop("my_rs_code", None)


def test_own_method_and_datamodule_by_class_path_train_and_reload(user_module, tmp_path):
    out = tmp_path / "run"
    cfg = load_config("moco_resnet18_eurosat", {
        "method": f"{user_module}.MyMoCo", "model.queue_size": 32, "model.image_size": 32,
        "datamodule": {"class_path": f"{user_module}.FiveBandNoise", "init_args": {"batch_size": 8}},
        "trainer.max_steps": 2, "trainer.out_dir": str(out), "trainer.progress_bar": False,
        "trainer.log_every_n_steps": 1, "optim.warmup_steps": 1,
    })
    final = pretrain(cfg)
    stamp = load_checkpoint(final)["rspretrain"]
    assert stamp["method"] == "my_moco" and stamp["class_path"] == f"{user_module}.MyMoCo"
    method = load_method(final)
    assert type(method).__name__ == "MyMoCo" and method.backbone.in_chans == 5  # in_chans linked from the data
    assert method.band_names == ("B02", "B03", "B04", "B08", "B11")
    assert torch.isfinite(method.backbone(torch.zeros(1, 5, 32, 32))).all()


def test_a_datamodule_without_the_link_is_refused_by_name(user_module, tmp_path):
    from rspretrain.pretrain.run import build

    cfg = load_config("moco_resnet18_eurosat", {"datamodule": {"class_path": f"{user_module}.NoLink"}})
    with pytest.raises(ConfigError, match="NoLink has no model_kwargs"):
        build(cfg)
    with pytest.raises(ConfigError, match="collections.OrderedDict is not a PretrainMethod"):
        load_config(None, {"method": "collections.OrderedDict"})

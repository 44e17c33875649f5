import pytest
import torch

from rspretrain.core.errors import NonFiniteLossError
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.methods.gersp import GeRSP
from rspretrain.pretrain.run import load_checkpoint, pretrain


def test_non_finite_loss_stops_with_step_and_term_and_keeps_last_good_checkpoint(tmp_path, data_root, monkeypatch):
    original = GeRSP.loss_from_views

    def poisoned(self, views, batch):
        loss, logs = original(self, views, batch)
        if self.global_step == 5:
            logs["loss_ce"] = torch.tensor(float("nan"))
            loss = loss + logs["loss_ce"]
        return loss, logs

    monkeypatch.setattr(GeRSP, "loss_from_views", poisoned)
    cfg = load_config("gersp_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "data.epoch_length": 80,
        "model.image_size": 32, "model.queue_size": 32, "trainer.max_steps": 20, "trainer.progress_bar": False,
        "trainer.ckpt_every_n_steps": 4, "trainer.out_dir": str(tmp_path / "run"),
    })
    with pytest.raises(NonFiniteLossError, match=r"step 5: loss is nan \(loss_ce=nan\)"):
        pretrain(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())

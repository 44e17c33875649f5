import pytest
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.training.trainer import TrainerConfig, build_trainer, resume_checkpoint, trainer_device


def test_trainer_config_refuses_unknown_precision_and_clock_naming_the_key():
    with pytest.raises(ConfigError, match="trainer.precision: 'bf17'"):
        TrainerConfig(precision="bf17")
    with pytest.raises(ConfigError, match="trainer.budget_clock"):
        TrainerConfig(budget_clock="moon")
    with pytest.raises(ConfigError, match="trainer.ckpt_every_n_steps must be a positive integer"):
        TrainerConfig(ckpt_every_n_steps=0)


def test_device_strings_map_to_lightning_accelerators():
    assert trainer_device("cpu") == ("cpu", 1)
    assert trainer_device("cuda") == ("gpu", 1)
    assert trainer_device("cuda:3") == ("gpu", [3])
    with pytest.raises(ConfigError, match="device 'tpu:x'"):
        trainer_device("tpu:x")


def test_resume_needs_an_existing_checkpoint(tmp_path):
    assert resume_checkpoint(tmp_path, False) is None
    with pytest.raises(DataError, match="last.ckpt: no checkpoint to resume from"):
        resume_checkpoint(tmp_path, True)
    given = tmp_path / "x.ckpt"
    given.write_bytes(b"0")
    assert resume_checkpoint(tmp_path, str(given)) == given


def test_harness_trainer_has_atomic_checkpoints_and_logs_under_the_run_folder(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from rspretrain.core.checkpoint_io import AtomicCheckpointIO

    trainer = build_trainer(TrainerConfig(max_steps=5, ckpt_every_n_steps=2, precision="bf16-mixed",
                                          accelerator="cpu", progress_bar=False), tmp_path, max_epochs=3)
    (checkpoint,) = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert checkpoint.dirpath == str(tmp_path / "checkpoints") and checkpoint._every_n_train_steps == 2
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert trainer.max_epochs == 3 and trainer.max_steps == 5 and trainer.precision == "bf16-mixed"
    assert {type(lg).__name__ for lg in trainer.loggers} == {"CSVLogger", "TensorBoardLogger"}
    probe = build_trainer(TrainerConfig(max_steps=1, accelerator="cpu"), None)
    assert probe.loggers == [] and probe.checkpoint_callback is None


def test_sync_batchnorm_plugin_converts_timm_layers_and_keeps_parameter_names():
    import timm
    from timm.layers import BatchNormAct2d

    from rspretrain.training.trainer import TimmSyncBatchNorm

    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=0)  # BatchNormAct2d throughout
    names = list(model.state_dict())
    acts = [type(m.act) for m in model.modules() if isinstance(m, BatchNormAct2d)]
    converted = TimmSyncBatchNorm().apply(model)
    assert list(converted.state_dict()) == names  # checkpoints and exports unchanged
    norms = [m for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    # timm's converter keeps the fused activation (torch's would turn BatchNormAct2d into a plain SyncBatchNorm).
    assert [type(m.act) for m in converted.modules() if hasattr(m, "act") and isinstance(m, torch.nn.SyncBatchNorm)] \
        == acts


def test_sync_batchnorm_on_cpu_ranks_is_a_stated_no_op(tmp_path, caplog):
    import logging

    from rspretrain.training.trainer import TimmSyncBatchNorm, _sync_batchnorm

    with caplog.at_level(logging.WARNING, logger="rspretrain"):
        assert _sync_batchnorm(TrainerConfig(sync_batchnorm=True, devices=2), "cpu", 2) == []
    assert "stay per rank on CPU" in caplog.text
    assert _sync_batchnorm(TrainerConfig(sync_batchnorm=True), "gpu", 1) == []  # one device: nothing to sync
    assert isinstance(_sync_batchnorm(TrainerConfig(sync_batchnorm=True, devices=4), "gpu", 4)[0], TimmSyncBatchNorm)

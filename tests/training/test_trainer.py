import pytest

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

"""The one dense LightningModule through the one harness: exact resume, checkpoints, the non-finite stop."""

import lightning as L
import pytest
import torch

from rspretrain.core.errors import NonFiniteLossError
from rspretrain.downstream.dense.change_detection import ChangeDetectionTask, change_schedule, load_change_data
from rspretrain.downstream.dense.dense_task import train_dense_task
from rspretrain.downstream.dense.detection import DetectionTask, detection_schedule, load_detection_data
from rspretrain.downstream.sources import random_init_spec


def _spec():
    return random_init_spec("resnet18", 3, 64, (0.5,) * 3, (0.25,) * 3, ("red", "green", "blue"))


class _Interrupt(L.Callback):
    """Kill the run when it reaches ``step`` (after the checkpoint of the step before was written)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


def _weights(task):
    return {k: v.clone() for k, v in task.model.state_dict().items()}


@pytest.mark.parametrize("kind", ["change", "detection"])
def test_interrupted_dense_training_resumes_to_the_uninterrupted_weights(data_root, tmp_path, kind):
    if kind == "change":
        train = load_change_data(data_root / "levir_cd_samples", scale=0.125)[0]
        schedule = change_schedule(epochs=2, crop_size=32, crops_per_image=1, batch_size=2, decoder_channels=8,
                                   progress=False)
        make = ChangeDetectionTask
    else:
        train = load_detection_data(data_root / "deepforest_neon_trees")[0]
        schedule = detection_schedule(epochs=2, crop_size=64, crops_per_image=1, batch_size=2, decoder_channels=8,
                                      progress=False)
        make = DetectionTask
    whole = make(_spec(), train, schedule)
    facts = train_dense_task(whole, tmp_path / "whole")
    per_epoch = whole.steps_per_epoch
    assert facts["steps"] == 2 * per_epoch and len(facts["loss_per_epoch"]) == 2
    assert (tmp_path / "whole" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "whole" / "logs" / "metrics.csv").is_file()

    killed = make(_spec(), train, schedule)
    with pytest.raises(RuntimeError, match="killed"):
        train_dense_task(killed, tmp_path / "killed", callbacks=[_Interrupt(per_epoch + 1)])
    resumed = make(_spec(), train, schedule)
    again = train_dense_task(resumed, tmp_path / "killed", resume=True)
    assert again["resumed_from"].endswith("last.ckpt") and again["steps"] == 2 * per_epoch
    assert again["loss_per_epoch"][0] == pytest.approx(facts["loss_per_epoch"][0])
    expected = _weights(whole)
    for name, value in _weights(resumed).items():
        torch.testing.assert_close(value, expected[name], msg=name)


class _NaNChange(ChangeDetectionTask):
    def loss(self, batch):
        loss, terms = super().loss(batch)
        return loss * float("nan"), {**terms, "loss_dice": torch.tensor(float("nan"))}


def test_a_non_finite_dense_loss_stops_naming_the_term(data_root, tmp_path):
    train = load_change_data(data_root / "levir_cd_samples", scale=0.125)[0]
    schedule = change_schedule(epochs=1, crop_size=32, crops_per_image=1, batch_size=2, decoder_channels=8,
                               progress=False)
    with pytest.raises(NonFiniteLossError, match=r"step 0: loss is nan \(loss_dice=nan\)"):
        train_dense_task(_NaNChange(_spec(), train, schedule), tmp_path)


def test_lightning_trainer_arguments_reach_the_dense_trainer(data_root, tmp_path):
    class Probe(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            self.clip = trainer.gradient_clip_val

    train = load_change_data(data_root / "levir_cd_samples", scale=0.125)[0]
    schedule = change_schedule(epochs=1, crop_size=32, crops_per_image=1, batch_size=2, decoder_channels=8,
                               progress=False)
    probe = Probe()
    train_dense_task(ChangeDetectionTask(_spec(), train, schedule), None, callbacks=[probe],
                     lightning={"gradient_clip_val": 0.5})
    assert probe.clip == 0.5


def test_input_statistics_of_the_training_images_standardise_a_backbone_from_other_imagery(data_root):
    """``input_statistics="train"``: the model standardises with the task's training images' own statistics (both
    dates of each LEVIR-CD pair), not the encoder's pretraining mean/std; an unknown value is refused."""
    from rspretrain.core.errors import ConfigError
    from rspretrain.data.band_statistics import array_band_statistics

    train = load_change_data(data_root / "levir_cd_samples", scale=0.125)[0]
    schedule = change_schedule(crop_size=32, batch_size=2, decoder_channels=8, progress=False,
                               input_statistics="train")
    task = ChangeDetectionTask(_spec(), train, schedule)
    mean, std = array_band_statistics([*train.images_a, *train.images_b], 255.0)
    assert task.mean == pytest.approx(mean) and task.std == pytest.approx(std)
    assert not task.mean == pytest.approx((0.5,) * 3)
    normalise = next(m for m in task.model.modules() if hasattr(m, "mean") and isinstance(m.mean, torch.Tensor))
    torch.testing.assert_close(normalise.mean.flatten(), torch.tensor(mean, dtype=torch.float32) * 255)
    facts = task.training_facts()
    assert facts["input_statistics"] == "train" and facts["input_mean"] == pytest.approx(mean, abs=1e-6)
    assert ChangeDetectionTask(_spec(), train, change_schedule(progress=False)).mean == (0.5,) * 3  # the encoder's
    with pytest.raises(ConfigError, match="input_statistics must be one of encoder, train, got 'data'"):
        change_schedule(input_statistics="data")

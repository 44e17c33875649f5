"""A run's recipe resolved for its data and its devices: epochs to steps, the learning rate to the global batch.

Papers state recipes per epoch and per reference batch ("200 epochs, lr 1e-3 x GPUs at 64 per GPU, 10 warm-up
epochs"); the harness counts optimiser steps. :func:`resolve_recipe` turns the ``trainer:`` and ``optim:`` sections
into the step values every run uses, from the samples in one epoch of the data and the global batch (per-device
batch x devices x nodes x gradient accumulation):

- ``trainer.max_epochs`` -> ``trainer.max_steps``; ``optim.warmup_epochs`` -> ``warmup_steps``;
  ``optim.step_every_epochs`` -> ``step_every`` (StepLR's period; ``step_every: 0`` with the ``step`` schedule is one
  epoch, GeoKR's); ``optim.restart_period_epochs`` -> ``restart_period_steps`` (cosine restarts);
- ``optim.lr`` given at ``optim.lr_reference_batch`` -> the lr at the run's global batch, ``linear`` or ``sqrt``
  (:meth:`~rspretrain.core.optim.OptimConfig.scaled_lr`).

An epoch is ``samples_per_epoch // global_batch`` optimiser steps (the loaders drop the last partial batch). Step
values given directly keep working; a value in epochs replaces its step twin. The resolved sections have no epoch
keys and ``lr_scaling: none``, and :class:`Recipe` keeps what was given next to what it became, for the start-up
log and ``rspretrain plan``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rspretrain.core.errors import ConfigError
from rspretrain.core.optim import OptimConfig
from rspretrain.training.fast_step import FastStep
from rspretrain.training.trainer import TrainerConfig

#: Keys in epochs and the step keys they resolve to.
EPOCH_KEYS = {
    "trainer.max_epochs": "trainer.max_steps",
    "optim.warmup_epochs": "optim.warmup_steps",
    "optim.step_every_epochs": "optim.step_every",
    "optim.restart_period_epochs": "optim.restart_period_steps",
}


@dataclass
class Recipe:
    """The resolved schedule of a run and what it was resolved from."""

    optim: OptimConfig
    trainer: TrainerConfig
    per_device_batch: int
    world_size: int
    accumulate: int
    global_batch: int
    samples_per_epoch: int | None
    steps_per_epoch: int | None
    lr_given: float
    #: ``key -> (given, resolved)`` for every value the resolution changed.
    resolved: dict[str, tuple[Any, Any]]
    #: Precision, memory format and compile backend, resolved for the hardware and the network once it is built
    #: (:func:`~rspretrain.training.fast_step.resolve_fast_step`).
    fast_step: FastStep | None = None

    @property
    def epochs(self) -> float | None:
        """The run's length in epochs (None when the epoch size is unknown)."""
        return None if not self.steps_per_epoch else self.trainer.max_steps / self.steps_per_epoch

    def summary(self) -> str:
        """One line for the start-up log."""
        epochs = f" = {self.epochs:.4g} epochs of {self.steps_per_epoch:,} steps" if self.epochs is not None else ""
        lr = (f"lr {self.optim.lr:.4g} ({self.lr_given:g} at batch {self.resolved['optim.lr'][0][1]}, "
              f"{self.resolved['optim.lr'][0][2]})" if "optim.lr" in self.resolved else f"lr {self.optim.lr:.4g}")
        return (f"recipe: global batch {self.global_batch} ({self.per_device_batch} x {self.world_size} rank(s)"
                f"{f' x {self.accumulate} accumulated' if self.accumulate > 1 else ''}), {self.trainer.max_steps:,} "
                f"steps{epochs}, {lr}, warm-up {self.optim.warmup_steps:,} steps")


def world_size(trainer: TrainerConfig) -> int:
    """Ranks of a run: devices x nodes (``devices`` may be a count or a list of device indices)."""
    devices = trainer.devices
    count = len(devices) if isinstance(devices, (list, tuple)) else int(devices)
    return count * trainer.num_nodes


def resolve_recipe(
    optim: OptimConfig, trainer: TrainerConfig, per_device_batch: int, samples_per_epoch: int | None
) -> Recipe:
    """The step values and lr of a run of ``per_device_batch`` per rank over ``samples_per_epoch`` per epoch.

    Args:
        optim, trainer: the sections as given.
        per_device_batch: ``data.batch_size``.
        samples_per_epoch: items in one epoch of the data (GeRSP's pairing: the larger source); None if unknown.

    Raises:
        ConfigError: a key in epochs with an unknown epoch size (naming the key), or an epoch shorter than one
            global batch.
    """
    ranks = world_size(trainer)
    accumulate = int(trainer.lightning.get("accumulate_grad_batches", 1) or 1)
    global_batch = per_device_batch * ranks * accumulate
    in_epochs = {key: value for key, value in (
        ("trainer.max_epochs", trainer.max_epochs), ("optim.warmup_epochs", optim.warmup_epochs),
        ("optim.step_every_epochs", optim.step_every_epochs),
        ("optim.restart_period_epochs", optim.restart_period_epochs)) if value is not None}
    steps_per_epoch = None
    if samples_per_epoch is not None:
        steps_per_epoch = samples_per_epoch // global_batch
        if steps_per_epoch < 1:
            raise ConfigError(f"data.batch_size: one epoch holds {samples_per_epoch:,} samples, fewer than the global "
                              f"batch of {global_batch:,} ({per_device_batch} x {ranks} rank(s) x {accumulate})")
    elif in_epochs:
        key = next(iter(in_epochs))
        raise ConfigError(f"{key}: the recipe is in epochs but the dataset's size is unknown (a datamodule without "
                          f"samples_per_epoch()); give {EPOCH_KEYS[key]} instead")
    resolved: dict[str, tuple[Any, Any]] = {}
    trainer_values: dict[str, Any] = {"max_epochs": None}
    optim_values: dict[str, Any] = {"warmup_epochs": None, "step_every_epochs": None, "restart_period_epochs": None,
                                    "lr_scaling": "none"}
    for key, epochs in in_epochs.items():
        steps = max(1, round(epochs * steps_per_epoch)) if key != "optim.warmup_epochs" else round(
            epochs * steps_per_epoch)
        section, _, name = EPOCH_KEYS[key].partition(".")
        (trainer_values if section == "trainer" else optim_values)[name] = steps
        resolved[EPOCH_KEYS[key]] = (f"{epochs:g} epochs", steps)
    if optim.schedule == "step" and optim.step_every == 0 and "optim.step_every" not in resolved and steps_per_epoch:
        optim_values["step_every"] = steps_per_epoch  # StepLR per epoch (GeoKR)
        resolved["optim.step_every"] = ("0 (one epoch)", steps_per_epoch)
    lr = optim.scaled_lr(global_batch)
    if optim.lr_scaling != "none":
        optim_values["lr"] = lr
        resolved["optim.lr"] = ((optim.lr, optim.lr_reference_batch, optim.lr_scaling), lr)
    return Recipe(
        optim=dataclasses.replace(optim, **optim_values),
        trainer=dataclasses.replace(trainer, **trainer_values),
        per_device_batch=per_device_batch, world_size=ranks, accumulate=accumulate, global_batch=global_batch,
        samples_per_epoch=samples_per_epoch, steps_per_epoch=steps_per_epoch, lr_given=optim.lr, resolved=resolved,
    )
